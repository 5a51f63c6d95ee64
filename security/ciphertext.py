"""The sealed-value format (documented in docs/compliance/encryption.md).

Every sealed value is self-describing::

    offset  size  field
    0       1     format version, 0x01
    1       16    key id of the data key (DEK) that sealed it
    17      12    nonce, random per value
    29      n+16  AES-256-GCM ciphertext of the n plaintext bytes, then the tag

The associated data binds the value to its place: the header above plus
tenant, resource type, resource id, version and field path. A value copied
to another record or field, or with any byte changed, fails to open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.errors import CiphertextError

FORMAT_V1 = 0x01
KEY_ID_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES
_SEP = b"\x1f"


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a sealed value belongs; every part goes into the associated data."""

    tenant: str
    resource_type: str
    resource_id: str
    version: int

    def aad(self, header: bytes, path: str) -> bytes:
        return _SEP.join(
            (
                header[: 1 + KEY_ID_BYTES],
                self.tenant.encode(),
                self.resource_type.encode(),
                self.resource_id.encode(),
                str(self.version).encode(),
                path.encode(),
            )
        )


def key_id_of(sealed: bytes) -> bytes:
    """The id of the data key that sealed ``sealed`` (raises CiphertextError when malformed)."""
    if len(sealed) < HEADER_BYTES + TAG_BYTES or sealed[0] != FORMAT_V1:
        raise CiphertextError("a sealed value is malformed or of an unknown format version")
    return sealed[1 : 1 + KEY_ID_BYTES]


def seal(aead: AESGCM, key_id: bytes, record: RecordRef, path: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under a fresh random nonce, bound to ``record`` and ``path``."""
    header = bytes((FORMAT_V1,)) + key_id + os.urandom(NONCE_BYTES)
    return header + aead.encrypt(header[1 + KEY_ID_BYTES :], plaintext, record.aad(header, path))


def open_sealed(aead: AESGCM, record: RecordRef, path: str, sealed: bytes) -> bytes:
    """Decrypt a value sealed for ``record`` and ``path``.

    Raises CiphertextError when the value was tampered with, sealed for another
    record or field, or sealed under another key.
    """
    key_id_of(sealed)
    nonce = sealed[1 + KEY_ID_BYTES : HEADER_BYTES]
    try:
        return aead.decrypt(nonce, sealed[HEADER_BYTES:], record.aad(sealed, path))
    except InvalidTag:
        raise CiphertextError("a sealed value failed authentication (tampered or bound elsewhere)") from None
