"""Replication state, kept in the destination region's catalog database.

Three tables beside pyiceberg's own (``iceberg_tables``) in the same database:

* ``dr_files`` — every file copied into the destination (source, dest, kind, size, SHA-256, and
  for data files rows and content digest); written as soon as a file is durable, so a restarted
  round copies nothing twice;
* ``dr_tables`` — per table the replicated state (source and destination metadata, snapshot,
  rows, digest, journal position);
* ``dr_meta`` — round counters: generation, journal position and time, audit heads, source region.

:meth:`ReplicaState.commit` moves the catalog pointers of every changed table and records the
round in ONE database transaction: the destination shows the old consistent state or the new
one, never a mix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from dr.errors import ReplicationError
from lake.replica import CopiedFile, TableCopy

_DDL = (
    "CREATE TABLE IF NOT EXISTS dr_files (source VARCHAR(1000) PRIMARY KEY, dest VARCHAR(1000) NOT NULL, "
    "kind VARCHAR(20) NOT NULL, size BIGINT NOT NULL, sha256 VARCHAR(64) NOT NULL, rows BIGINT, "
    "digest VARCHAR(64), copied_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dr_tables (name VARCHAR(255) PRIMARY KEY, source_metadata VARCHAR(1000) NOT NULL, "
    "dest_metadata VARCHAR(1000) NOT NULL, snapshot_id BIGINT, sequence_number BIGINT NOT NULL, "
    "timestamp_ms BIGINT, rows BIGINT NOT NULL, digest VARCHAR(64) NOT NULL, journal_seq BIGINT NOT NULL, "
    "replicated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dr_meta (name VARCHAR(255) PRIMARY KEY, value TEXT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class TableState:
    name: str
    source_metadata: str
    dest_metadata: str
    snapshot_id: int | None
    sequence_number: int
    timestamp_ms: int | None
    rows: int
    digest: str
    journal_seq: int
    replicated_at: float


class ReplicaState:
    """The ledger and the round record of one destination; implements ``lake.replica.CopyLedger``."""

    def __init__(self, engine: Engine, catalog_name: str, namespace: str) -> None:
        self._engine = engine
        self._catalog, self._namespace = catalog_name, namespace
        with engine.begin() as conn:
            for ddl in _DDL:
                conn.execute(text(ddl))
        self._files: dict[str, CopiedFile] = {}

    # -- CopyLedger -------------------------------------------------------------------------

    def copied(self, source: str) -> CopiedFile | None:
        """The record of ``source`` if it was copied (cached after the first lookup)."""
        hit = self._files.get(source)
        if hit is not None:
            return hit
        with self._engine.connect() as conn:
            row = conn.execute(
                text("SELECT source, dest, kind, size, sha256, rows, digest FROM dr_files WHERE source=:s"),
                {"s": source},
            ).fetchone()
        if row is None:
            return None
        found = CopiedFile(row[0], row[1], row[2], int(row[3]), row[4], row[5], row[6])
        self._files[source] = found
        return found

    def record(self, copy: CopiedFile) -> None:
        """Durably note that ``copy`` is in the destination."""
        with self._engine.begin() as conn:
            conn.execute(text("DELETE FROM dr_files WHERE source=:s"), {"s": copy.source})
            conn.execute(
                text(
                    "INSERT INTO dr_files(source, dest, kind, size, sha256, rows, digest, copied_at) "
                    "VALUES (:source, :dest, :kind, :size, :sha256, :rows, :digest, :at)"
                ),
                {**_copy_params(copy), "at": time.time_ns() // 1000},
            )
        self._files[copy.source] = copy

    def file_by_dest(self, dest: str) -> CopiedFile | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                text("SELECT source, dest, kind, size, sha256, rows, digest FROM dr_files WHERE dest=:d"), {"d": dest}
            ).fetchone()
        return None if row is None else CopiedFile(row[0], row[1], row[2], int(row[3]), row[4], row[5], row[6])

    # -- rounds -----------------------------------------------------------------------------

    def tables(self) -> dict[str, TableState]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT name, source_metadata, dest_metadata, snapshot_id, sequence_number, timestamp_ms, "
                    "rows, digest, journal_seq, replicated_at FROM dr_tables"
                )
            ).fetchall()
        return {
            r[0]: TableState(r[0], r[1], r[2], r[3], int(r[4]), r[5], int(r[6]), r[7], int(r[8]), int(r[9]) / 1e6)
            for r in rows
        }

    def meta(self) -> dict[str, Any]:
        with self._engine.connect() as conn:
            rows = conn.execute(text("SELECT name, value FROM dr_meta")).fetchall()
        return {str(r[0]): json.loads(r[1]) for r in rows}

    def commit(
        self, sources: Mapping[str, str], copies: Mapping[str, TableCopy], meta: Mapping[str, Any], *, epoch: int
    ) -> None:
        """Advance the catalog pointers of ``copies`` and record the round, in one transaction.

        ``sources`` maps each table to the source metadata location it was copied from; ``epoch``
        is the DR epoch the round started in. Raises ReplicationError (and changes nothing) when
        this destination was promoted since: a late round must never overwrite a promoted region.
        """
        now = time.time_ns() // 1000
        with self._engine.begin() as conn:
            row = conn.execute(text("SELECT value FROM dr_meta WHERE name='promoted_epoch'")).fetchone()
            if row is not None and int(json.loads(row[0])) > epoch:
                raise ReplicationError("the destination was promoted after this round began; nothing was advanced")
            for name, copy in copies.items():
                self._point(conn, name, copy.metadata_location)
                conn.execute(text("DELETE FROM dr_tables WHERE name=:n"), {"n": name})
                conn.execute(
                    text(
                        "INSERT INTO dr_tables(name, source_metadata, dest_metadata, snapshot_id, sequence_number, "
                        "timestamp_ms, rows, digest, journal_seq, replicated_at) VALUES (:n, :src, :dst, :sid, "
                        ":seqno, :ts, :rows, :digest, :jseq, :at)"
                    ),
                    {
                        "n": name,
                        "src": sources[name],
                        "dst": copy.metadata_location,
                        "sid": copy.snapshot_id,
                        "seqno": copy.sequence_number,
                        "ts": copy.timestamp_ms,
                        "rows": copy.rows,
                        "digest": copy.digest,
                        "jseq": copy.journal_seq,
                        "at": now,
                    },
                )
            for key, value in meta.items():
                conn.execute(text("DELETE FROM dr_meta WHERE name=:n"), {"n": key})
                conn.execute(
                    text("INSERT INTO dr_meta(name, value) VALUES (:n, :v)"), {"n": key, "v": json.dumps(value)}
                )

    def _point(self, conn: Connection, name: str, location: str) -> None:
        key = {"c": self._catalog, "ns": self._namespace, "t": name}
        row = conn.execute(
            text(
                "SELECT metadata_location FROM iceberg_tables "
                "WHERE catalog_name=:c AND table_namespace=:ns AND table_name=:t"
            ),
            key,
        ).fetchone()
        if row is None:
            conn.execute(
                text(
                    "INSERT INTO iceberg_tables(catalog_name, table_namespace, table_name, metadata_location, "
                    "previous_metadata_location) VALUES (:c, :ns, :t, :loc, NULL)"
                ),
                {**key, "loc": location},
            )
        else:
            conn.execute(
                text(
                    "UPDATE iceberg_tables SET metadata_location=:loc, previous_metadata_location=:prev "
                    "WHERE catalog_name=:c AND table_namespace=:ns AND table_name=:t"
                ),
                {**key, "loc": location, "prev": row[0]},
            )

    def mark_promoted(self, epoch: int) -> None:
        """Record that this region became active at ``epoch``: rounds begun before it cannot commit here."""
        with self._engine.begin() as conn:
            conn.execute(text("DELETE FROM dr_meta WHERE name='promoted_epoch'"))
            conn.execute(
                text("INSERT INTO dr_meta(name, value) VALUES ('promoted_epoch', :v)"), {"v": json.dumps(epoch)}
            )

    def reset_tables(self) -> None:
        """Forget the per-table record (after a switch of direction); copied files stay known."""
        with self._engine.begin() as conn:
            conn.execute(text("DELETE FROM dr_tables"))


def _copy_params(copy: CopiedFile) -> dict[str, Any]:
    return {
        "source": copy.source,
        "dest": copy.dest,
        "kind": copy.kind,
        "size": copy.size,
        "sha256": copy.sha256,
        "rows": copy.rows,
        "digest": copy.digest,
    }
