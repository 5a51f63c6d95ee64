"""The record format of the hash chain, and the Ed25519 checkpoint signatures.

Every stored line is the canonical JSON (orjson, sorted keys, no whitespace) of a
*body*, with the body's SHA-256 spliced in as one more, last member::

    {"event":{…},"prev":"<64 hex>","seq":7,"hash":"<64 hex>"}
    {"checkpoint":{"hash":…,"key_id":…,"time":…,"upto":7},"prev":…,"seq":8,"sig":"<b64>","hash":…}

``hash`` = sha256 of the line with ``,"hash":"…"`` cut out, i.e. of the canonical form of
the body; ``prev`` = the previous line's ``hash`` (64 zeros for ``seq`` 1). Because the hash
member always takes the last 75 bytes, a verifier hashes a slice of the stored bytes and
reads ``seq`` and ``prev`` from the end of the line: one SHA-256 and no JSON parsing per event
record. A checkpoint (written every N records or T seconds) signs ``{"hash": prev, "upto":
seq - 1, "time", "key_id"}``; ``key_id`` is the first 16 hex of sha256(raw public key).
Checkpoint lines are parsed in full (there are few of them).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import AuditConfigError, AuditEventError, AuditIntegrityError

ZERO_HASH = b"0" * 64
_HASH_MEMBER = b',"hash":"'
_TAIL = len(_HASH_MEMBER) + 64 + 2  # ,"hash":"<64 hex>"}
_SEQ_MEMBER = b',"seq":'
_PREV_MEMBER = b',"prev":"'
_EVENT_PREFIX = b'{"event":'
_CHECKPOINT_PREFIX = b'{"checkpoint":'
_CHECKPOINT_KEYS = {"checkpoint", "prev", "seq", "sig"}


def canonical(value: Any) -> bytes:
    """Canonical JSON: orjson with sorted keys, no whitespace. Raises AuditEventError if not serializable."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise AuditEventError("audit event is not JSON-serializable") from exc


def _seal(body: bytes) -> tuple[bytes, bytes]:
    digest = hashlib.sha256(body).hexdigest().encode()
    return body[:-1] + _HASH_MEMBER + digest + b'"}', digest


def event_line(seq: int, prev: bytes, event_json: bytes) -> tuple[bytes, bytes]:
    """The stored line (no newline) and hash of event record ``seq``; ``event_json`` is canonical JSON."""
    return _seal(b'{"event":%b,"prev":"%b","seq":%d}' % (event_json, prev, seq))


def checkpoint_line(seq: int, prev: bytes, signer: Signer, time: str) -> tuple[bytes, bytes, bytes]:
    """A signed checkpoint over the chain up to ``seq - 1``: its line, its hash, its ``checkpoints.log`` line."""
    claim = canonical({"hash": prev.decode(), "key_id": signer.key_id, "time": time, "upto": seq - 1})
    sig = signer.sign(claim)
    line, digest = _seal(b'{"checkpoint":%b,"prev":"%b","seq":%d,"sig":"%b"}' % (claim, prev, seq, sig))
    return line, digest, b'{"hash":"%b","seq":%d,"sig":"%b"}' % (digest, seq, sig)


def unseal(line: bytes) -> tuple[int, bytes, bytes, dict[str, Any] | None]:
    """``(seq, prev, hash, checkpoint record or None)`` of a stored line whose hash is intact.

    Raises AuditIntegrityError: kind ``malformed`` (framing broken) or ``hash`` (content changed).
    """
    if len(line) < _TAIL + 30 or line[-_TAIL : -_TAIL + len(_HASH_MEMBER)] != _HASH_MEMBER or line[-2:] != b'"}':
        raise AuditIntegrityError("malformed", "the line does not end in a hash member")
    digest = line[-66:-2]
    body = line[:-_TAIL] + b"}"
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise AuditIntegrityError("hash", "the stored hash does not match the record's contents")
    if line.startswith(_EVENT_PREFIX):
        at = line.rfind(_SEQ_MEMBER, 0, -_TAIL)
        seq_text = line[at + len(_SEQ_MEMBER) : -_TAIL]
        if at < 74 or line[at - 74 : at - 65] != _PREV_MEMBER or line[at - 1] != 0x22 or not seq_text.isdigit():
            raise AuditIntegrityError("malformed", "an event record lacks its seq or prev member")
        return int(seq_text), line[at - 65 : at - 1], digest, None
    if line.startswith(_CHECKPOINT_PREFIX):
        return _unseal_checkpoint(body, digest)
    raise AuditIntegrityError("malformed", "the line is neither an event nor a checkpoint record")


def _unseal_checkpoint(body: bytes, digest: bytes) -> tuple[int, bytes, bytes, dict[str, Any]]:
    try:
        record = orjson.loads(body)
        ok = set(record) == _CHECKPOINT_KEYS and canonical(record) == body and isinstance(record["seq"], int)
    except (orjson.JSONDecodeError, AuditEventError):
        ok = False
    if not ok:
        raise AuditIntegrityError("malformed", "a checkpoint record is not in canonical form")
    return record["seq"], str(record["prev"]).encode(), digest, record


class Signer:
    """Signs checkpoints with an Ed25519 key derived from a 32-byte seed."""

    def __init__(self, seed: bytes) -> None:
        """Raises AuditConfigError unless ``seed`` is 32 bytes."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise AuditConfigError("the audit signing seed must be 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_of(self.public_key)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id}, seed=***)"

    def sign(self, data: bytes) -> bytes:
        """Base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self._key.sign(data))


def key_id_of(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def check_checkpoint(record: dict[str, Any], seq: int, prev: bytes, public_keys: Mapping[str, bytes]) -> None:
    """Check a checkpoint record found at ``seq`` after a record whose hash is ``prev``.

    Raises AuditIntegrityError: kind ``checkpoint`` (it claims another chain position), ``key``
    (signed by a key not in ``public_keys``) or ``signature`` (the signature does not verify).
    """
    claim = record["checkpoint"]
    if not isinstance(claim, dict) or claim.get("upto") != seq - 1 or claim.get("hash") != prev.decode():
        raise AuditIntegrityError("checkpoint", f"checkpoint seq {seq} does not seal the records before it")
    public = public_keys.get(str(claim.get("key_id")))
    if public is None:
        raise AuditIntegrityError("key", f"checkpoint seq {seq} is signed by an unknown key")
    try:
        signature = base64.b64decode(str(record["sig"]), validate=True)
        Ed25519PublicKey.from_public_bytes(public).verify(signature, canonical(claim))
    except (InvalidSignature, ValueError):
        raise AuditIntegrityError("signature", f"checkpoint seq {seq} has an invalid signature") from None
