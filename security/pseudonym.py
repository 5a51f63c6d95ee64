"""Keyed, deterministic pseudonyms: the patient key and blind search tokens.

The lake and the journal never index a patient id, an identifier (MRN, SSN…),
a name, a birth date, a phone number or an e-mail address in clear. They store
HMAC-SHA-256 values under the tenant's index key (a data key wrapped by the
tenant KEK like every other), so equality lookups work while the values
themselves reveal nothing without the key.
"""

from __future__ import annotations

import hashlib
import hmac

from security.policy import normalize


class Pseudonymizer:
    """Derives patient keys and blind index tokens; never reversible without the key."""

    def __init__(self, index_key: bytes, tenant: str = "default") -> None:
        scope = tenant.encode()
        patient = hmac.new(index_key, b"fhirlake/patient-key/v1\x1f" + scope, hashlib.sha256).digest()
        token = hmac.new(index_key, b"fhirlake/blind-index/v1\x1f" + scope, hashlib.sha256).digest()
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

    def identifier_token(self, resource_type: str, system: str | None, value: str) -> str:
        """Blind index token of an identifier; ``system=None`` matches any system."""
        scope = "*" if system is None else system
        return self._mac(f"{resource_type}\x1fidentifier\x1f{scope}\x1f{value}")

    def token(self, resource_type: str, param: str, value: str) -> str:
        """Blind index token of a normalized search value (family, birthdate, phone, email)."""
        return self._mac(f"{resource_type}\x1f{param}\x1f{normalize(param, value)}")

    def _mac(self, message: str) -> str:
        mac = self._token.copy()
        mac.update(message.encode())
        return mac.hexdigest()[:32]
