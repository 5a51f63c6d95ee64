"""The embedded KMS: a keyring file of KEKs, themselves encrypted by a master secret.

``keys/keyring.json`` (mode 0600) lists every KEK version of every tenant,
each sealed with AES-256-GCM under the master secret (from the environment,
a secret file, or ``keys/master.key`` created on first start). Data keys are
wrapped with AES-256-GCM under a KEK, with the encryption context as
associated data, so a wrapped key only opens for the subject it was made for.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.config import KmsSettings
from security.errors import KeyAccessError, KeyStoreError, KmsUnavailableError
from security.kms import Context
from security.secretfile import SECRET_BYTES, load_or_create_secret, read_secret, write_private

_NONCE = 12
_FORMAT = 1


def _context_aad(context: Context) -> bytes:
    return b"\x1f".join(f"{k}={v}".encode() for k, v in sorted(context.items()))


class LocalKeyProvider:
    name = "local"

    def __init__(self, settings: KmsSettings, keys_dir: Path) -> None:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = keys_dir / "keyring.json"
        self._lock_path = keys_dir / "keyring.lock"
        self._master = AESGCM(_master_secret(settings, keys_dir))
        self._mutex = threading.Lock()
        self._keks: dict[str, AESGCM] = {}
        self._current: dict[str, str] = {}
        self._mtime = -1.0

    def __repr__(self) -> str:
        return f"LocalKeyProvider(keyring={self._path.name}, master=***)"

    # -- KeyProvider --------------------------------------------------------------------------

    def current_kek(self, tenant: str) -> str:
        self._refresh()
        if tenant not in self._current:
            with self._exclusive():
                doc = self._load_doc()
                if tenant not in doc["current"]:
                    self._add_version(doc, tenant)
                    write_private(self._path, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            self._refresh(force=True)
        return self._current[tenant]

    def generate_data_key(self, kek_id: str, context: Context) -> tuple[bytes, bytes]:
        dek = os.urandom(32)
        return dek, self._wrap(kek_id, dek, context)

    def decrypt_data_key(self, kek_id: str, wrapped: bytes, context: Context) -> bytes:
        kek = self._kek(kek_id)
        try:
            return kek.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _context_aad(context))
        except InvalidTag:
            raise KeyAccessError("a wrapped data key does not open under its KEK and context") from None

    def rewrap(self, kek_id: str, wrapped: bytes, new_kek_id: str, context: Context) -> bytes:
        return self._wrap(new_kek_id, self.decrypt_data_key(kek_id, wrapped, context), context)

    def rotate(self, tenant: str) -> str:
        with self._exclusive():
            doc = self._load_doc()
            kek_id = self._add_version(doc, tenant)
            write_private(self._path, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        self._refresh(force=True)
        return kek_id

    def probe(self, tenant: str) -> None:
        try:
            if self._path.exists() or tenant in self._current:
                self._path.read_bytes()
        except OSError:
            raise KmsUnavailableError("the local keyring cannot be read") from None

    # -- internals ----------------------------------------------------------------------------

    def _wrap(self, kek_id: str, dek: bytes, context: Context) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._kek(kek_id).encrypt(nonce, dek, _context_aad(context))

    def _kek(self, kek_id: str) -> AESGCM:
        kek = self._keks.get(kek_id)
        if kek is None:
            self._refresh(force=True)
            kek = self._keks.get(kek_id)
        if kek is None:
            raise KeyAccessError(f"KEK {kek_id} is not in the local keyring")
        return kek

    def _refresh(self, *, force: bool = False) -> None:
        """Reload the keyring when another process (``keys rotate``) changed it."""
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        except OSError:
            raise KmsUnavailableError("the local keyring cannot be read") from None
        if not force and mtime == self._mtime:
            return
        with self._mutex:
            doc = self._load_doc()
            keks = {kid: self._open_kek(kid, entry) for kid, entry in doc["keks"].items()}
            self._keks, self._current, self._mtime = keks, dict(doc["current"]), mtime

    def _open_kek(self, kek_id: str, entry: dict[str, Any]) -> AESGCM:
        try:
            sealed = base64.b64decode(entry["sealed"])
            raw = self._master.decrypt(sealed[:_NONCE], sealed[_NONCE:], b"fhirlake/kek/v1\x1f" + kek_id.encode())
        except (InvalidTag, KeyError, binascii.Error):
            raise KeyAccessError("the keyring does not open under the configured master secret") from None
        return AESGCM(raw)

    def _add_version(self, doc: dict[str, Any], tenant: str) -> str:
        versions = [e["version"] for e in doc["keks"].values() if e["tenant"] == tenant]
        version = max(versions, default=0) + 1
        kek_id = f"local:{tenant}:v{version}"
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._master.encrypt(nonce, os.urandom(32), b"fhirlake/kek/v1\x1f" + kek_id.encode())
        doc["keks"][kek_id] = {
            "tenant": tenant,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sealed": base64.b64encode(sealed).decode(),
        }
        doc["current"][tenant] = kek_id
        return kek_id

    def _load_doc(self) -> dict[str, Any]:
        if not self._path.exists():
            return {"format": _FORMAT, "keks": {}, "current": {}}
        if self._path.stat().st_mode & 0o077:
            raise KeyStoreError("the keyring is accessible by group or others; expected mode 0600")
        try:
            doc: dict[str, Any] = orjson.loads(self._path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            raise KeyStoreError("the keyring file is unreadable or corrupt") from None
        if doc.get("format") != _FORMAT:
            raise KeyStoreError("the keyring has an unknown format version")
        return doc

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _master_secret(settings: KmsSettings, keys_dir: Path) -> bytes:
    if settings.master_key is not None:
        try:
            raw = base64.b64decode(settings.master_key.get_secret_value(), validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != SECRET_BYTES:
            raise KeyStoreError("the master key must be base64 of 32 bytes")
        return raw
    if settings.master_key_file is not None:
        return read_secret(settings.master_key_file)
    return load_or_create_secret(keys_dir / "master.key")
