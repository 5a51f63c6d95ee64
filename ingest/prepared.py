"""What the validation workers hand back: checked, validated, serialized entries.

Plain picklable records; they cross the process-pool boundary once per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.errors import IngestError
from ingest.extract import Columns


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int
    max_entries: int


@dataclass(slots=True)
class PreparedEntry:
    index: int
    method: str  # POST, PUT, DELETE or GET
    resource_type: str
    resource_id: str | None = None  # POST: tentative new id; PUT/DELETE/GET: the id in the url
    full_url: str | None = None
    conditional: str | None = None  # query of a conditional PUT / DELETE, or of ifNoneExist
    if_match: int | None = None
    version_id: int | None = None  # GET Type/id/_history/vid
    query: str | None = None  # GET search query string
    body: bytes | None = None  # serialized resource with meta placeholders
    cond_refs: tuple[str, ...] = ()
    patient_id: str | None = None
    columns: Columns | tuple[Any, ...] | None = None  # Columns; a plain tuple after crossing the pool
    identifiers: tuple[tuple[str, str], ...] = ()
    search: tuple[tuple[str, str], ...] = ()  # blind-indexed (param, value) pairs besides identifiers
    phi: tuple[tuple[str, bytes], ...] = ()  # policy elements to seal one by one: (element, json)
    access: tuple[tuple[str, str], ...] = ()  # who cares for the patient: ("org", id), ("member", ref)
    category: str | None = None  # " code system|code " (extract.categories), kept in clear
    body_id: str | None = None  # id given in the body of a conditional update
    error: IngestError | None = None  # batch entries fail alone

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled once per entry per request: a flat tuple is ~5x cheaper than the dataclass default.
        values = [getattr(self, name) for name in _ENTRY_FIELDS]
        values[_COLUMNS_AT] = None if self.columns is None else tuple(self.columns)
        return (_entry, (tuple(values),))


@dataclass(slots=True)
class PreparedBundle:
    bundle_type: str  # transaction or batch
    entries: list[PreparedEntry]
    identifier: tuple[str, str] | None
    version_token: bytes
    updated_token: bytes
    single: bool = False  # a plain REST interaction, not a Bundle
    resource_count: int = field(default=0)


_ENTRY_FIELDS = tuple(PreparedEntry.__dataclass_fields__)
_COLUMNS_AT = _ENTRY_FIELDS.index("columns")


def _entry(values: tuple[object, ...]) -> PreparedEntry:
    return PreparedEntry(*values)  # type: ignore[arg-type]
