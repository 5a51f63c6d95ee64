"""The shape of a lake row, shared by the journal (producer) and the lake (consumer)."""

from __future__ import annotations

import struct
from typing import Any, NamedTuple, Protocol


class VersionRow(NamedTuple):
    """One resource version, in the column order of the journal and the lake tables."""

    resource_type: str
    id: str
    version: int
    seq: int
    last_updated_us: int
    deleted: int
    patient_key: str | None
    status: str | None
    code_system: str | None
    code: str | None
    effective_year: int | None
    value_num: float | None
    value_unit: str | None
    body: bytes | None  # sealed resource
    phi: bytes | None  # sealed policy elements, packed (``pack_fields``)


# A row travels as a plain tuple in VersionRow's column order: building tens of
# thousands of named tuples per window cost ~10% of the server's main-process time.
Row = tuple[Any, ...]
RTYPE, SEQ, BODY, PHI = 0, 3, 13, 14
COLUMN_COUNT = len(VersionRow._fields)

_PATH = struct.Struct("<H")
_VALUE = struct.Struct("<I")


def pack_fields(fields: list[tuple[str, bytes]]) -> bytes:
    """``(path, sealed value)`` pairs as one blob: u16 path length, path, u32 value length, value."""
    parts: list[bytes] = []
    for path, value in fields:
        raw = path.encode()
        parts += (_PATH.pack(len(raw)), raw, _VALUE.pack(len(value)), value)
    return b"".join(parts)


def unpack_fields(blob: bytes) -> list[tuple[str, bytes]]:
    out, at = [], 0
    while at < len(blob):
        (size,) = _PATH.unpack_from(blob, at)
        path = blob[at + 2 : at + 2 + size].decode()
        at += 2 + size
        (size,) = _VALUE.unpack_from(blob, at)
        out.append((path, blob[at + 4 : at + 4 + size]))
        at += 4 + size
    return out


class RowSource(Protocol):
    """Where the lake writer reads accepted rows from (the ingest journal)."""

    def committed_seq(self) -> int: ...

    def last_seq(self) -> int: ...

    def pending(self, after_seq: int) -> tuple[int, int | None]:
        """Rows accepted after ``after_seq`` and the acceptance time (µs) of the oldest."""
        ...

    def window_end(self, after_seq: int, max_rows: int) -> int: ...

    def rows_between(self, after_seq: int, upto_seq: int) -> list[Row]:
        """Rows with ``after_seq < seq <= upto_seq`` in VersionRow column order."""
        ...

    def mark_committed(self, seq: int) -> None: ...

    def prune_bodies(self, upto_seq: int, older_than_us: int) -> int: ...
