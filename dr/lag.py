"""Replication lag: per table snapshots and seconds behind, the journal and the audit trails.

:func:`replication_lag` reads both regions (never writes) and is what ``fhirlake dr status``
prints and what a metrics endpoint can expose. Seconds behind are measured from the oldest change
of the active region that the other one does not hold yet (0 when nothing is pending).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from typing import Any

from dr.audit_copy import last_seq, own_trails
from dr.region import load_control, trail_prefix
from dr.replicate import direction, open_lake, open_state
from fhirlake.settings import Settings
from lake.replica import file_io, metadata_doc, snapshots_after


def replication_lag(settings: Settings) -> dict[str, Any]:
    """Lag of the passive region behind the active one. Raises OSError if the source is unreadable."""
    source, dest = direction(settings)
    _, state = open_state(settings, dest)
    meta, recorded = state.meta(), state.tables()
    now = time.time()
    src_lake = open_lake(settings, source)
    fio = file_io(source.warehouse, source.io_properties)
    tables: dict[str, Any] = {}
    for ident in src_lake.catalog.list_tables(settings.lake.namespace):
        name = ident[-1]
        location = src_lake.catalog.load_table(ident).metadata_location
        known = recorded.get(name)
        doc = metadata_doc(fio, location)
        pending = snapshots_after(doc, known.sequence_number if known else -1)
        if known is not None and known.source_metadata == location:
            pending = []
        oldest = min((int(s["timestamp-ms"]) for s in pending), default=None)
        tables[name] = {
            "replicated_snapshot": None if known is None else known.snapshot_id,
            "snapshots_behind": len(pending),
            "seconds_behind": 0.0 if oldest is None else round(max(0.0, now - oldest / 1000), 3),
        }
    return {
        "source": source.name,
        "dest": dest.name,
        "epoch": load_control(settings).epoch,
        "last_round_at": meta.get("round_at"),
        "generation": meta.get("generation", 0),
        "tables": tables,
        "journal": _journal_lag(source.journal, int(meta.get("journal_seq", 0)), now),
        "audit": _audit_lag(settings, source, meta.get("audit_heads", {})),
    }


def _journal_lag(path: Any, replicated: int, now: float) -> dict[str, Any]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)) as conn:
        last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM transactions").fetchone()[0]
        row = conn.execute("SELECT MIN(accepted) FROM transactions WHERE seq > ?", (replicated,)).fetchone()
    oldest = None if row is None or row[0] is None else int(row[0]) / 1e6
    return {
        "acknowledged_seq": int(last),
        "replicated_seq": replicated,
        "transactions_behind": int(last) - replicated,
        "seconds_behind": 0.0 if oldest is None else round(max(0.0, now - oldest), 3),
    }


def _audit_lag(settings: Settings, source: Any, heads: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for trail in own_trails(source.audit_dir, trail_prefix(settings, source.name)):
        head = last_seq(trail)
        out[trail.name] = {"head_seq": head, "replicated_seq": int(heads.get(trail.name, 0))}
    return out


def prometheus_text(lag: dict[str, Any]) -> str:
    """The lag as Prometheus text exposition (for the gateway's metrics endpoint)."""
    lines = [
        "# HELP fhirlake_dr_snapshots_behind Iceberg snapshots of the active region not yet in the other one.",
        "# TYPE fhirlake_dr_snapshots_behind gauge",
    ]
    for name, table in sorted(lag["tables"].items()):
        lines.append(f'fhirlake_dr_snapshots_behind{{table="{name}"}} {table["snapshots_behind"]}')
    lines += [
        "# HELP fhirlake_dr_seconds_behind Age of the oldest change not yet replicated.",
        "# TYPE fhirlake_dr_seconds_behind gauge",
    ]
    for name, table in sorted(lag["tables"].items()):
        lines.append(f'fhirlake_dr_seconds_behind{{table="{name}"}} {table["seconds_behind"]}')
    journal = lag["journal"]
    lines.append(f'fhirlake_dr_seconds_behind{{table="_journal"}} {journal["seconds_behind"]}')
    lines += [
        "# TYPE fhirlake_dr_journal_transactions_behind gauge",
        f"fhirlake_dr_journal_transactions_behind {journal['transactions_behind']}",
    ]
    return "\n".join(lines) + "\n"
