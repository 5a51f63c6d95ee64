"""Key-encryption keys live in a KMS: one small protocol, a registry of providers.

A provider holds one key-encryption key (KEK) per tenant, in versions. It
generates data keys (DEKs) and returns them both in clear and wrapped under a
KEK; it unwraps them again; and it re-wraps them under a newer KEK version.
Providers are loaded lazily by name, so boto3 is imported only by ``aws-kms``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

from security.config import KmsSettings
from security.errors import KeyStoreError, KmsUnavailableError
from telemetry.metrics import KMS_ERRORS, KMS_REQUEST_SECONDS

T = TypeVar("T")

# Encryption context: names the tenant and the subject a data key belongs to.
Context = Mapping[str, str]


class KeyProvider(Protocol):
    name: str

    def current_kek(self, tenant: str) -> str:
        """Id of the tenant's current KEK version (created on first use where allowed)."""
        ...

    def generate_data_key(self, kek_id: str, context: Context) -> tuple[bytes, bytes]:
        """A fresh 256-bit DEK: ``(plaintext, wrapped)``. Raises KmsUnavailableError, KeyAccessError."""
        ...

    def decrypt_data_key(self, kek_id: str, wrapped: bytes, context: Context) -> bytes:
        """Unwrap a DEK. Raises KmsUnavailableError, KeyAccessError."""
        ...

    def rewrap(self, kek_id: str, wrapped: bytes, new_kek_id: str, context: Context) -> bytes:
        """The same DEK wrapped under ``new_kek_id``."""
        ...

    def rotate(self, tenant: str) -> str:
        """Create a new KEK version for ``tenant``, make it current, return its id."""
        ...

    def probe(self, tenant: str) -> None:
        """Raise KmsUnavailableError unless the KMS answers now."""
        ...


PROVIDERS: dict[str, str] = {
    "local": "security.kms_local:LocalKeyProvider",
    "aws-kms": "security.kms_aws:AwsKmsProvider",
}


def load_provider(settings: KmsSettings, keys_dir: Path) -> KeyProvider:
    """Instantiate the configured provider (raises KeyStoreError for an unknown name)."""
    target = PROVIDERS.get(settings.provider)
    if target is None:
        raise KeyStoreError(f"unknown KMS provider {settings.provider!r}; known: {', '.join(sorted(PROVIDERS))}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - boto3 is a core dependency today
        raise KeyStoreError(f"KMS provider {settings.provider!r} needs a missing package: {exc.name}") from None
    provider: KeyProvider = getattr(module, cls_name)(settings, keys_dir)
    return MeteredProvider(provider)


class MeteredProvider:
    """A provider whose every call is timed (``fhirlake_kms_request_duration_seconds``) and whose
    unavailability is counted (``fhirlake_kms_errors_total``): the KMS dashboards and alerts."""

    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.name = inner.name

    def __repr__(self) -> str:
        return f"MeteredProvider({self.inner!r})"

    def current_kek(self, tenant: str) -> str:
        return self._timed("current_kek", lambda: self.inner.current_kek(tenant))

    def generate_data_key(self, kek_id: str, context: Context) -> tuple[bytes, bytes]:
        return self._timed("generate_data_key", lambda: self.inner.generate_data_key(kek_id, context))

    def decrypt_data_key(self, kek_id: str, wrapped: bytes, context: Context) -> bytes:
        return self._timed("decrypt_data_key", lambda: self.inner.decrypt_data_key(kek_id, wrapped, context))

    def rewrap(self, kek_id: str, wrapped: bytes, new_kek_id: str, context: Context) -> bytes:
        return self._timed("rewrap", lambda: self.inner.rewrap(kek_id, wrapped, new_kek_id, context))

    def rotate(self, tenant: str) -> str:
        return self._timed("rotate", lambda: self.inner.rotate(tenant))

    def probe(self, tenant: str) -> None:
        self._timed("probe", lambda: self.inner.probe(tenant))

    @staticmethod
    def _timed(operation: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        except KmsUnavailableError:
            KMS_ERRORS.labels(operation).inc()
            raise
        finally:
            KMS_REQUEST_SECONDS.labels(operation).observe(time.perf_counter() - started)
