"""Sealed values: bound to their record and field, tamper-evident, never reusing a nonce."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.ciphertext import (
    FORMAT_V1,
    HEADER_BYTES,
    KEY_ID_BYTES,
    NONCE_BYTES,
    RecordRef,
    key_id_of,
    open_sealed,
    seal,
)
from security.errors import CiphertextError

KEY_ID = os.urandom(KEY_ID_BYTES)
AEAD = AESGCM(AESGCM.generate_key(256))
HERE = RecordRef("default", "Patient", "p1", 3)


def test_round_trip_and_documented_layout() -> None:
    sealed = seal(AEAD, KEY_ID, HERE, "birthDate", b'"1931-07-14"')
    assert sealed[0] == FORMAT_V1 and key_id_of(sealed) == KEY_ID
    assert len(sealed) == HEADER_BYTES + len(b'"1931-07-14"') + 16
    assert b"1931" not in sealed
    assert open_sealed(AEAD, HERE, "birthDate", sealed) == b'"1931-07-14"'


@pytest.mark.parametrize(
    ("record", "path"),
    [
        (RecordRef("default", "Patient", "p2", 3), "birthDate"),  # another resource
        (RecordRef("default", "Patient", "p1", 4), "birthDate"),  # another version
        (RecordRef("default", "Observation", "p1", 3), "birthDate"),  # another type
        (RecordRef("other", "Patient", "p1", 3), "birthDate"),  # another tenant
        (HERE, "name"),  # another field of the same record
    ],
)
def test_a_value_moved_elsewhere_fails_to_open(record: RecordRef, path: str) -> None:
    sealed = seal(AEAD, KEY_ID, HERE, "birthDate", b'"1931-07-14"')
    with pytest.raises(CiphertextError):
        open_sealed(AEAD, record, path, sealed)


@pytest.mark.parametrize("at", [0, 1, HEADER_BYTES - 1, HEADER_BYTES, -1])
def test_any_changed_byte_fails(at: int) -> None:
    sealed = bytearray(seal(AEAD, KEY_ID, HERE, "name", b'[{"family":"Doe"}]'))
    sealed[at] ^= 0x01
    with pytest.raises(CiphertextError):
        open_sealed(AEAD, HERE, "name", bytes(sealed))


def test_truncated_or_foreign_values_are_refused() -> None:
    sealed = seal(AEAD, KEY_ID, HERE, "name", b"x")
    with pytest.raises(CiphertextError):
        open_sealed(AEAD, HERE, "name", sealed[:20])
    with pytest.raises(CiphertextError):
        open_sealed(AESGCM(AESGCM.generate_key(256)), HERE, "name", sealed)


def test_a_million_seals_never_repeat_a_nonce() -> None:
    start, end = 1 + KEY_ID_BYTES, 1 + KEY_ID_BYTES + NONCE_BYTES
    nonces = {seal(AEAD, KEY_ID, HERE, "v", b"")[start:end] for _ in range(1_000_000)}
    assert len(nonces) == 1_000_000
