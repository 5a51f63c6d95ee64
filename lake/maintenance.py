"""Lake maintenance: snapshot expiry and compaction of small files.

Both run while ingest continues. Compaction replaces a partition's small files
with one sorted file in a single overwrite commit; if the lake writer commits
in between, the commit conflicts and is retried on the refreshed table, so no
appended row is ever dropped.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.io.pyarrow import _dataframe_to_data_files  # pinned pyiceberg <0.13
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from lake.arrow import ARROW_SCHEMA, sort_for_patients
from lake.audit_table import is_append_only
from lake.catalog import LakeCatalog
from lake.errors import LakeUnavailableError
from lake.schema import all_tables
from lake.snapshots import protected_snapshots

_ATTEMPTS = 8


@dataclass(slots=True)
class MaintenanceReport:
    expired_snapshots: dict[str, int] = field(default_factory=dict)
    files_before: dict[str, int] = field(default_factory=dict)
    files_after: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def maintain(
    catalog: LakeCatalog, *, snapshot_retention_s: float, min_files: int, target_rows: int
) -> MaintenanceReport:
    """Compact every table, then expire snapshots older than the retention.

    Raises LakeUnavailableError if a compaction commit keeps conflicting.
    """
    report = MaintenanceReport()
    for name in all_tables():
        table = catalog.table(name, fresh=True)
        report.files_before[name] = len(_live_files(table))
        compact_table(catalog, name, min_files=min_files, target_rows=target_rows)
        report.expired_snapshots[name] = expire_snapshots(catalog, name, snapshot_retention_s)
        table = catalog.table(name, fresh=True)
        files = _live_files(table)
        report.files_after[name] = len(files)
        report.rows[name] = sum(f.record_count for f in files)
    return report


def _live_files(table: Table) -> list[DataFile]:
    if table.current_snapshot() is None:
        return []
    return [task.file for task in table.scan().plan_files()]


def compact_table(catalog: LakeCatalog, name: str, *, min_files: int, target_rows: int) -> int:
    """Rewrite each partition holding ``min_files`` or more small files; returns files removed."""
    for attempt in range(_ATTEMPTS):
        table = catalog.table(name, fresh=True)
        if is_append_only(table):
            return 0  # the audit mirror is never rewritten and keeps every snapshot
        groups: dict[tuple[object, ...], list[DataFile]] = defaultdict(list)
        for data_file in _live_files(table):
            if data_file.record_count < target_rows:
                groups[_partition_key(data_file)].append(data_file)
        victims = [files for files in groups.values() if len(files) >= min_files]
        if not victims:
            return 0
        try:
            removed = _rewrite(table, victims)
        except (CommitFailedException, ValidationException, ValueError):
            # The writer committed meanwhile: re-plan on the refreshed table.
            time.sleep(0.1 * (attempt + 1))
            continue
        catalog.remember(name, table)
        return removed
    raise LakeUnavailableError("compaction kept conflicting with concurrent commits")


def _rewrite(table: Table, groups: list[list[DataFile]]) -> int:
    parts = [
        pq.read_table(table.io.new_input(f.file_path).open(), schema=ARROW_SCHEMA) for files in groups for f in files
    ]
    merged = sort_for_patients(pa.concat_tables(parts))
    new_files = list(_dataframe_to_data_files(table.metadata, merged, table.io))
    with (
        table.transaction() as tx,
        tx.update_snapshot(snapshot_properties={"fhirlake.operation": "compact"}).overwrite() as rewrite,
    ):
        for files in groups:
            for old in files:
                rewrite.delete_data_file(old)
        for new in new_files:
            rewrite.append_data_file(new)
    return sum(len(files) for files in groups)


def expire_snapshots(catalog: LakeCatalog, name: str, retention_s: float) -> int:
    """Expire snapshots older than ``retention_s``; the current one and tagged ones (legal holds) stay."""
    table = catalog.table(name, fresh=True)
    if is_append_only(table):
        return 0  # the audit mirror is never rewritten and keeps every snapshot
    current = table.current_snapshot()
    if current is None:
        return 0
    cutoff = datetime.now(UTC) - timedelta(seconds=retention_s)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    keep = protected_snapshots(table) | {current.snapshot_id}  # legal holds and branches stay
    old = [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep]
    if not old:
        return 0
    table.maintenance.expire_snapshots().by_ids(old).commit()
    return len(old)


def _partition_key(data_file: DataFile) -> tuple[object, ...]:
    record = data_file.partition
    return tuple(record[i] for i in range(len(record)))
