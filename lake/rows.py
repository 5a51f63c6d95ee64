"""The shape of a lake row, shared by the journal (producer) and the lake (consumer)."""

from __future__ import annotations

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
    effective_us: int | None
    value_num: float | None
    value_unit: str | None
    body: bytes | None


# A row travels as a plain tuple in VersionRow's column order: building tens of
# thousands of named tuples per window cost ~10% of the server's main-process time.
Row = tuple[Any, ...]
RTYPE, SEQ, BODY = 0, 3, 13


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
