"""Time travel and legal holds over the Iceberg snapshots.

``versions_as_of`` reads a table as it stood at an instant: the snapshot that
was current then, and of its rows only versions written no later than the
instant. A legal hold is an Iceberg tag on the current snapshot of every
table; ``lake/maintenance.py`` never expires a snapshot a tag or branch points
to, so a held snapshot stays readable for as long as the hold exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pyiceberg.expressions import And, BooleanExpression, EqualTo, In
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from lake.catalog import LakeCatalog
from lake.errors import LakeDataError
from lake.schema import all_tables, table_for

HOLD_PREFIX = "hold-"
_HOLD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class SnapshotUsed:
    table: str
    snapshot_id: int | None  # None: the table had no snapshot yet at that instant
    timestamp_ms: int | None

    def label(self) -> str:
        return f"{self.table}={self.snapshot_id if self.snapshot_id is not None else 'none'}"


@dataclass(frozen=True, slots=True)
class VersionAsOf:
    id: str
    version: int
    last_updated_us: int
    deleted: bool
    patient_key: str | None
    body: bytes | None


def snapshot_at(table: Table, name: str, at_us: int) -> SnapshotUsed:
    """The snapshot of ``table`` that was current at ``at_us`` (the first retained one if all are later)."""
    snap = table.snapshot_as_of_timestamp(at_us // 1000, inclusive=True)
    if snap is None:
        return SnapshotUsed(name, None, None)
    return SnapshotUsed(name, snap.snapshot_id, snap.timestamp_ms)


def versions_as_of(
    catalog: LakeCatalog,
    resource_type: str,
    at_us: int,
    *,
    ids: list[str] | None = None,
    patient_keys: list[str] | None = None,
) -> tuple[SnapshotUsed, list[VersionAsOf]]:
    """Rows of ``resource_type`` in the snapshot current at ``at_us`` with ``last_updated <= at_us``.

    ``ids`` and ``patient_keys`` prune the scan (the patient key to its bucket partition).
    """
    name = table_for(resource_type)
    table = catalog.table(name, fresh=True)
    used = snapshot_at(table, name, at_us)
    if used.snapshot_id is None:
        return used, []
    filt: BooleanExpression = EqualTo("resource_type", resource_type)  # type: ignore[call-arg, arg-type]
    if ids is not None:
        filt = And(filt, In("id", ids))  # type: ignore[call-arg, arg-type]
    if patient_keys is not None:
        filt = And(filt, In("patient_key", patient_keys))  # type: ignore[call-arg, arg-type]
    columns = ("id", "version", "last_updated", "deleted", "patient_key", "resource")
    data = table.scan(row_filter=filt, selected_fields=columns, snapshot_id=used.snapshot_id).to_arrow()
    cutoff = datetime.fromtimestamp(at_us / 1_000_000, UTC)
    out = []
    for row in data.to_pylist():
        if row["last_updated"] <= cutoff:
            stamp = int(row["last_updated"].timestamp() * 1_000_000)
            out.append(
                VersionAsOf(row["id"], row["version"], stamp, row["deleted"], row["patient_key"], row["resource"])
            )
    return used, out


def hold(catalog: LakeCatalog, name: str) -> dict[str, int]:
    """Tag the current snapshot of every table ``hold-<name>`` (a legal hold); raises LakeDataError."""
    tag = _tag(name)
    held: dict[str, int] = {}
    for table_name in all_tables():
        table = catalog.table(table_name, fresh=True)
        current = table.current_snapshot()
        if current is None:
            continue
        if tag in table.metadata.refs:
            raise LakeDataError(f"a legal hold named {name!r} exists already")
        table.manage_snapshots().create_tag(current.snapshot_id, tag).commit()
        held[table_name] = current.snapshot_id
    return held


def release(catalog: LakeCatalog, name: str) -> int:
    """Remove the legal hold ``name`` from every table; the number of tables it was on."""
    tag = _tag(name)
    released = 0
    for table_name in all_tables():
        table = catalog.table(table_name, fresh=True)
        if tag in table.metadata.refs:
            table.manage_snapshots().remove_tag(tag).commit()
            released += 1
    return released


def holds(catalog: LakeCatalog) -> dict[str, dict[str, int]]:
    """Legal holds: name -> table -> snapshot id."""
    out: dict[str, dict[str, int]] = {}
    for table_name in all_tables():
        for ref_name, ref in catalog.table(table_name, fresh=True).metadata.refs.items():
            if ref.snapshot_ref_type == SnapshotRefType.TAG and ref_name.startswith(HOLD_PREFIX):
                out.setdefault(ref_name.removeprefix(HOLD_PREFIX), {})[table_name] = ref.snapshot_id
    return out


def protected_snapshots(table: Table) -> set[int]:
    """Snapshots a tag or branch points to: never expired."""
    return {ref.snapshot_id for ref in table.metadata.refs.values()}


def _tag(name: str) -> str:
    if not _HOLD_NAME.match(name):
        raise LakeDataError("a legal hold name is 1-64 letters, digits, '.', '_' or '-'")
    return HOLD_PREFIX + name
