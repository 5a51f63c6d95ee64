"""The stored record format: canonical JSON, a hash over a slice, signed checkpoints."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import ZERO_HASH, Signer, canonical, check_checkpoint, checkpoint_line, event_line, key_id_of, unseal
from audit.errors import AuditConfigError, AuditEventError, AuditIntegrityError

SEED = bytes(range(32))
EVENT = {"resourceType": "AuditEvent", "action": "R", "outcome": "0", "entity": [{"what": {"reference": "Patient/1"}}]}


def test_event_line_is_canonical_json_with_the_hash_of_seq_prev_event_appended() -> None:
    line, digest = event_line(7, ZERO_HASH, canonical(EVENT))
    body = orjson.dumps({"seq": 7, "prev": "0" * 64, "event": EVENT}, option=orjson.OPT_SORT_KEYS)
    assert digest == hashlib.sha256(body).hexdigest().encode()
    assert line == body[:-1] + b',"hash":"' + digest + b'"}'
    assert orjson.loads(line) == {"seq": 7, "prev": "0" * 64, "event": EVENT, "hash": digest.decode()}
    assert b" " not in line and b"\n" not in line


def test_unseal_reads_seq_prev_and_hash_back() -> None:
    first, h1 = event_line(1, ZERO_HASH, canonical(EVENT))
    second, h2 = event_line(2, h1, canonical(EVENT))
    assert unseal(first) == (1, ZERO_HASH, h1, None)
    assert unseal(second) == (2, h1, h2, None)


def test_unseal_names_a_changed_record() -> None:
    line, _ = event_line(1, ZERO_HASH, canonical(EVENT))
    with pytest.raises(AuditIntegrityError) as exc:
        unseal(line.replace(b"Patient/1", b"Patient/2"))
    assert exc.value.kind == "hash"
    with pytest.raises(AuditIntegrityError) as exc:
        unseal(line[:-3])
    assert exc.value.kind == "malformed"


def test_checkpoint_signs_the_chain_position_and_verifies_with_the_public_key_only() -> None:
    signer = Signer(SEED)
    _, head = event_line(1, ZERO_HASH, canonical(EVENT))
    line, digest, index = checkpoint_line(2, head, signer, "2026-01-01T00:00:00.000Z")
    seq, prev, found, record = unseal(line)
    assert (seq, prev, found) == (2, head, digest)
    assert record is not None and record["checkpoint"] == {
        "hash": head.decode(),
        "key_id": signer.key_id,
        "time": "2026-01-01T00:00:00.000Z",
        "upto": 1,
    }
    assert orjson.loads(index) == {"seq": 2, "hash": digest.decode(), "sig": record["sig"]}
    check_checkpoint(record, 2, head, {signer.key_id: signer.public_key})


def test_checkpoint_from_another_key_or_position_is_refused() -> None:
    signer = Signer(SEED)
    _, head = event_line(1, ZERO_HASH, canonical(EVENT))
    line, _, _ = checkpoint_line(2, head, signer, "2026-01-01T00:00:00.000Z")
    record = unseal(line)[3]
    assert record is not None
    with pytest.raises(AuditIntegrityError) as exc:
        check_checkpoint(record, 2, head, {})
    assert exc.value.kind == "key"
    other = Signer(bytes(32)).public_key
    with pytest.raises(AuditIntegrityError) as exc:
        check_checkpoint(record, 2, head, {signer.key_id: other})
    assert exc.value.kind == "signature"
    with pytest.raises(AuditIntegrityError) as exc:
        check_checkpoint(record, 3, head, {signer.key_id: signer.public_key})
    assert exc.value.kind == "checkpoint"


def test_signer_derives_the_published_key_from_the_seed() -> None:
    signer = Signer(SEED)
    expected = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    assert signer.public_key == expected
    assert signer.key_id == key_id_of(expected) == hashlib.sha256(expected).hexdigest()[:16]
    assert SEED.hex() not in repr(signer) and "***" in repr(signer)


@pytest.mark.parametrize("seed", [b"", b"x" * 31, b"x" * 33])
def test_signer_refuses_a_seed_that_is_not_32_bytes(seed: bytes) -> None:
    with pytest.raises(AuditConfigError):
        Signer(seed)


def test_canonical_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(AuditEventError):
        canonical({"when": object()})
