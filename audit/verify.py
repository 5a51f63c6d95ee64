"""Verification of a stored trail: hashes, links, checkpoint signatures and the checkpoint index.

What each check catches: a changed byte breaks that line's hash (``hash``/``malformed``); a
deleted, inserted, repeated or moved record breaks the ``seq`` sequence or the ``prev`` link;
rewriting the chain from some point on (recomputing every hash after it) is caught by the next
checkpoint's Ed25519 signature (``signature``, or ``key`` when ``public_keys`` are pinned and
the forger brought a key of their own); cutting off the end of the segments is caught by the
checkpoint index ``checkpoints.log``, which names checkpoints the segments no longer hold
(``truncated``). Records after the last checkpoint are protected by the chain alone: the
checkpoint interval bounds that window.

Speed: one SHA-256 over a slice of each stored line and no JSON parsing of event records (see
:mod:`audit.chain`); only checkpoints are parsed and their signatures checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from audit.chain import ZERO_HASH, check_checkpoint, unseal
from audit.errors import AuditIntegrityError
from audit.segments import INDEX_NAME, KEYS_NAME, read_public_keys, segment_name, segment_paths


@dataclass(frozen=True, slots=True)
class Finding:
    """Where the chain first breaks: segment file, 1-based line in it, seq there, kind, detail."""

    segment: str
    line: int
    seq: int | None
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    records: int  # event records verified (checkpoints not counted)
    checkpoints: int
    segments: int
    head_seq: int
    head_hash: str
    unsealed_records: int  # event records after the last checkpoint: protected by the hash chain only
    torn_tail: bool  # the last segment ends in a partial line (a crash mid-write; never acknowledged)
    first_error: Finding | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Scan:
    """The running state of one verification pass over a chain."""

    def __init__(self, public_keys: Mapping[str, bytes]) -> None:
        self.keys = public_keys
        self.seq, self.head = 0, ZERO_HASH
        self.records = self.unsealed = self.segments = self.last_line = 0
        self.last_segment = ""
        self.checkpoints: dict[int, bytes] = {}

    def segment(self, name: str, lines: Iterable[bytes]) -> Finding | None:
        self.segments, self.last_segment, self.last_line = self.segments + 1, name, 0
        seq, head, records, unsealed, number = self.seq, self.head, self.records, self.unsealed, 0
        try:
            for number, line in enumerate(lines, 1):
                try:
                    found, prev, digest, checkpoint = unseal(line)
                    if found != seq + 1:
                        what = "records are missing" if found > seq + 1 else "a record is repeated, inserted or moved"
                        raise AuditIntegrityError("seq", f"expected seq {seq + 1}, found {found}: {what}")
                    if prev != head:
                        raise AuditIntegrityError("prev", f"seq {found} does not link to seq {seq}")
                    if checkpoint is not None:
                        check_checkpoint(checkpoint, found, prev, self.keys)
                except AuditIntegrityError as exc:
                    where = seq + 1 if exc.kind in ("hash", "malformed") else found
                    return Finding(name, number, where, exc.kind, exc.detail)
                if checkpoint is None:
                    records, unsealed = records + 1, unsealed + 1
                else:
                    self.checkpoints[found], unsealed = digest, 0
                seq, head = found, digest
        finally:
            self.seq, self.head, self.records, self.unsealed, self.last_line = seq, head, records, unsealed, number
        return None

    def index(self, entries: Iterable[bytes]) -> Finding | None:
        for number, raw in enumerate(entries, 1):
            try:
                entry = orjson.loads(raw)
                seq, digest = int(entry["seq"]), str(entry["hash"]).encode()
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return Finding(INDEX_NAME, number, None, "malformed", "an index line is not a checkpoint entry")
            if seq > self.seq:
                detail = f"{INDEX_NAME} line {number} names checkpoint seq {seq}; the segments end at seq {self.seq}"
                return Finding(self.last_segment, self.last_line + 1, self.seq + 1, "truncated", detail)
            if self.checkpoints.get(seq) != digest:
                detail = f"checkpoint seq {seq} in {INDEX_NAME} is not the one in the segments"
                return Finding(INDEX_NAME, number, seq, "index", detail)
        return None

    def report(self, error: Finding | None, torn_tail: bool = False) -> VerifyReport:
        return VerifyReport(
            ok=error is None,
            records=self.records,
            checkpoints=len(self.checkpoints),
            segments=self.segments,
            head_seq=self.seq,
            head_hash=self.head.decode(),
            unsealed_records=self.unsealed,
            torn_tail=torn_tail,
            first_error=error,
        )


def verify_chain(
    segments: Iterable[tuple[str, Iterable[bytes]]], index: Iterable[bytes], public_keys: Mapping[str, bytes]
) -> VerifyReport:
    """Verify a chain given as named segments of lines (without newlines) and checkpoint index lines.

    A broken chain is reported, not raised: ``first_error`` names where it breaks.
    """
    scan = _Scan(public_keys)
    for name, lines in segments:
        if (error := scan.segment(name, lines)) is not None:
            return scan.report(error)
    return scan.report(scan.index(index))


class _Lines:
    """The lines of one file without their newlines; a partial last line is held back in ``torn``."""

    def __init__(self, path: Path) -> None:
        self.path, self.torn = path, False

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb", buffering=1 << 20) as f:
            for raw in f:
                if raw[-1:] != b"\n":
                    self.torn = True
                    return
                yield raw[:-1]


def verify(directory: Path, *, public_keys: Mapping[str, bytes] | None = None) -> VerifyReport:
    """Verify the trail stored in ``directory``, reading only; no secret is needed.

    ``public_keys`` (key id -> raw Ed25519 public key) pins the keys trusted to sign checkpoints;
    by default those in the directory's ``public_keys.json``, which a forger could replace too.
    A broken or missing trail is reported (``ok`` false, ``first_error``), not raised.
    Raises OSError if a file of the trail exists but cannot be read.
    """
    directory = Path(directory)
    scan = _Scan({})
    if not directory.is_dir():
        return scan.report(Finding("", 0, None, "missing", "there is no audit trail directory"))
    if public_keys is None:
        try:
            public_keys = read_public_keys(directory / KEYS_NAME)
        except AuditIntegrityError:
            public_keys = {}  # fine while there is no checkpoint; the first one will name the problem
    scan.keys = public_keys
    paths = segment_paths(directory)
    torn = False
    for position, (number, path) in enumerate(paths, 1):
        if number != position:
            return scan.report(Finding(segment_name(position), 0, scan.seq + 1, "segment", "segment file is missing"))
        lines = _Lines(path)
        if (error := scan.segment(path.name, lines)) is not None:
            return scan.report(error)
        torn = lines.torn
        if torn and position != len(paths):
            detail = "the segment ends in a partial line but is not the last one"
            return scan.report(Finding(path.name, scan.last_line + 1, scan.seq + 1, "malformed", detail))
    index = directory / INDEX_NAME
    return scan.report(scan.index(_Lines(index) if index.exists() else []), torn_tail=torn)
