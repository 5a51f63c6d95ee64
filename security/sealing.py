"""Field-level sealing of stored rows: the one place ingest and reads meet encryption.

Every resource body, and every PHI element the field policy names, passes
through a ``RowSealer`` on its way into the journal and the lake, and back out
on reads. ``FieldSealer`` seals with AES-256-GCM under the data key of the
row's subject (its patient, or the tenant), bound to tenant, resource type,
id, version and field path (``security.ciphertext``). ``PlaintextSealer``
exists for the encryption-off benchmark only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from security.ciphertext import RecordRef, key_id_of, open_sealed, seal
from security.keys import DataKeys

BODY_PATH = "resource"  # the field path of the whole resource body


class RowSealer(Protocol):
    encrypted: bool

    def prepare(self, subjects: Iterable[str]) -> None:
        """Make the keys of ``subjects`` ready (creates or unwraps them; may call the KMS)."""
        ...

    def seal(
        self, subject: str, rtype: str, rid: str, version: int, fields: Sequence[tuple[str, bytes]]
    ) -> list[bytes]:
        """Seal each ``(path, plaintext)`` of one resource version under ``subject``'s key."""
        ...

    def open(self, rtype: str, rid: str, version: int, path: str, sealed: bytes) -> bytes:
        """Open one sealed field (raises security errors: shredded, unavailable, tampered)."""
        ...


class FieldSealer:
    encrypted = True

    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys
        self._tenant = keys.tenant

    def __repr__(self) -> str:
        return f"FieldSealer({self._keys!r})"

    def prepare(self, subjects: Iterable[str]) -> None:
        self._keys.ensure(subjects)

    def seal(
        self, subject: str, rtype: str, rid: str, version: int, fields: Sequence[tuple[str, bytes]]
    ) -> list[bytes]:
        key_id, aead = self._keys.for_subject(subject)
        record = RecordRef(self._tenant, rtype, rid, version)
        return [seal(aead, key_id, record, path, value) for path, value in fields]

    def open(self, rtype: str, rid: str, version: int, path: str, sealed: bytes) -> bytes:
        aead = self._keys.by_id(key_id_of(sealed))
        return open_sealed(aead, RecordRef(self._tenant, rtype, rid, version), path, sealed)


class PlaintextSealer:
    """Stores values as given: only for measuring what encryption costs (bench/ingest.py)."""

    encrypted = False

    def prepare(self, subjects: Iterable[str]) -> None:
        return None

    def seal(
        self, subject: str, rtype: str, rid: str, version: int, fields: Sequence[tuple[str, bytes]]
    ) -> list[bytes]:
        return [value for _, value in fields]

    def open(self, rtype: str, rid: str, version: int, path: str, sealed: bytes) -> bytes:
        return sealed
