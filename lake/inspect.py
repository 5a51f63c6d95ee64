"""Operator views of the lake: rows, files and snapshots per table."""

from __future__ import annotations

from typing import Any

from lake.catalog import LakeCatalog
from lake.schema import JOURNAL_SEQ_PROPERTY, all_tables


def describe(catalog: LakeCatalog) -> dict[str, Any]:
    """Per table: live rows, data files, snapshots and the journal position it holds."""
    out: dict[str, Any] = {}
    for name in all_tables():
        table = catalog.table(name, fresh=True)
        files = [t.file for t in table.scan().plan_files()] if table.current_snapshot() else []
        out[name] = {
            "rows": sum(f.record_count for f in files),
            "data_files": len(files),
            "snapshots": len(table.snapshots()),
            "commits": len(table.snapshots()),
            "data_files_written": sum(_added_files(s.summary) for s in table.snapshots()),
            "journal_seq": int(table.properties.get(JOURNAL_SEQ_PROPERTY, "0")),
            "partition_spec": str(table.spec()),
        }
    return out


def _added_files(summary: Any) -> int:
    value = None if summary is None else summary.get("added-data-files")
    return int(value or 0)
