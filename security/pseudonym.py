"""Keyed, deterministic pseudonyms: the patient key and blind search tokens.

The lake and the journal never index a patient id or an identifier (MRN, SSN…)
in clear. They store HMAC-SHA256 values under a secret key kept in the data
directory (mode 0600), so equality lookups work while the values themselves
reveal nothing without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from security.errors import KeyStoreError

_KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """Read the secret at ``path``, creating it (mode 0600) on first start.

    Raises KeyStoreError when the file exists but is unreadable, has the wrong
    size, or is readable by group or others.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(_KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    if path.stat().st_mode & 0o077:
        raise KeyStoreError("a key file is accessible by group or others; expected mode 0600")
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise KeyStoreError("a key file has the wrong size")
    return key


class Pseudonymizer:
    """Derives patient keys and blind index tokens; never reversible without the key."""

    def __init__(self, key: bytes) -> None:
        patient = hmac.new(key, b"fhirlake/patient-key/v1", hashlib.sha256).digest()
        token = hmac.new(key, b"fhirlake/blind-index/v1", hashlib.sha256).digest()
        # Keyed once; each call copies the keyed state instead of re-deriving the pads.
        self._patient = hmac.new(patient, digestmod=hashlib.sha256)
        self._token = hmac.new(token, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "Pseudonymizer(key=***)"

    def patient_key(self, patient_id: str) -> str:
        """The pseudonymous key of the patient with logical id ``patient_id``."""
        mac = self._patient.copy()
        mac.update(patient_id.encode())
        return mac.hexdigest()[:32]

    def token(self, resource_type: str, system: str | None, value: str) -> str:
        """Blind index token of an identifier; ``system=None`` matches any system."""
        scope = "*" if system is None else system
        message = f"{resource_type}\x1f{scope}\x1f{value}".encode()
        mac = self._token.copy()
        mac.update(message)
        return mac.hexdigest()[:32]
