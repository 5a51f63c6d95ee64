"""Group commit of accepted rows into Iceberg.

A background thread drains the journal in windows of whole transactions and
makes one Iceberg commit per table per window, never one per request. Each
commit also sets the table property ``fhirlake.journal-seq`` in the same
metadata update, so after a crash the writer knows exactly which rows a table
already holds and writes every row exactly once.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import structlog
from opentelemetry import trace
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import Table

from lake.arrow import rows_to_arrow
from lake.catalog import LakeCatalog
from lake.errors import LakeUnavailableError
from lake.rows import RTYPE, SEQ, Row, RowSource
from lake.schema import JOURNAL_SEQ_PROPERTY, table_for
from telemetry.metrics import LAKE_COMMIT_SECONDS, LAKE_COMMITS, LAKE_FILES_WRITTEN

_tracer = trace.get_tracer("fhirlake.lake")

log = structlog.get_logger("lake.writer")

_COMMIT_ATTEMPTS = 8


@dataclass(slots=True)
class WriterStats:
    commits: int = 0
    rows: int = 0
    data_files: int = 0
    windows: int = 0
    commit_seconds: list[float] = field(default_factory=list)


class LakeWriter:
    """Moves accepted rows from a ``RowSource`` into the lake tables."""

    def __init__(
        self,
        catalog: LakeCatalog,
        source: RowSource,
        *,
        interval_s: float = 5.0,
        min_rows: int = 25_000,
        max_rows: int = 50_000,
        hot_retention_s: float = 3600.0,
        lock_path: Path | None = None,
    ) -> None:
        self._catalog = catalog
        self._source = source
        self._interval = interval_s
        self._min_rows = min_rows
        self._max_rows = max_rows
        self._retention_us = int(hot_retention_s * 1_000_000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.stats = WriterStats()
        self.last_error: str | None = None
        self._lock_path = lock_path
        self._lock_fd: int | None = None

    def holds_lock(self) -> bool:
        """Take the single-committer lock if it is free (several gateway processes share one lake)."""
        if self._lock_fd is not None or self._lock_path is None:
            return True
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lake-writer", daemon=True)
        self._thread.start()

    def stop(self, *, drain: bool = True) -> None:
        """Stop the thread; with ``drain``, first write everything accepted so far."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if drain:
            self.flush()
            self._release_lock()

    def _due(self) -> bool:
        """Commit when enough rows wait, or when the oldest has waited ``interval_s``.

        Iceberg commits cost 50-400 ms of CPU each, whatever their size: fewer,
        larger commits keep that cost off the request path and the files large.
        """
        rows, oldest_us = self._source.pending(self._source.committed_seq())
        if rows == 0 or oldest_us is None:
            return False
        age_s = datetime.now(UTC).timestamp() - oldest_us / 1_000_000
        return rows >= self._min_rows or age_s >= self._interval

    def _run(self) -> None:
        poll = min(0.5, self._interval / 2)
        while not self._stop.is_set():
            self._wake.wait(poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.holds_lock() and self._due():
                    self.flush()
                self.last_error = None
            except Exception as exc:  # keep the thread alive; rows stay in the journal
                self.last_error = type(exc).__name__
                log.error("lake_flush_failed", error=type(exc).__name__)
                time.sleep(min(self._interval * 5, 10))

    def flush(self) -> int:
        """Write every accepted row not yet in the lake; returns rows written.

        Raises LakeUnavailableError when a commit keeps failing.
        """
        written = 0
        if not self.holds_lock():
            return 0  # another process is the committer; it drains these rows
        with self._flush_lock:
            # Drain what was accepted before this flush began, not what arrives during it:
            # under load, chasing new arrivals would turn one large commit into many small ones.
            target = self._source.last_seq()
            while self._source.committed_seq() < target:
                seen, n = self._flush_window(target)
                written += n
                if seen == 0:
                    break
            self._prune()
        return written

    def _flush_window(self, target: int) -> tuple[int, int]:
        """Write one window of whole transactions up to ``target``; returns (rows read, rows written)."""
        low = self._source.committed_seq()
        high = min(self._source.window_end(low, self._max_rows), target)
        if high <= low:
            return 0, 0
        rows = self._source.rows_between(low, high)
        groups: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            groups[table_for(row[RTYPE])].append(row)
        written = 0
        for name, table_rows in sorted(groups.items()):
            written += self._commit_table(name, table_rows, high)
        self._source.mark_committed(high)
        self.stats.windows += 1
        return max(len(rows), 1), written

    def _commit_table(self, name: str, rows: list[Row], high: int) -> int:
        with _tracer.start_as_current_span("lake.commit") as span:
            span.set_attribute("fhirlake.table", name)
            span.set_attribute("fhirlake.rows", len(rows))
            return self._commit_attempts(name, rows, high)

    def _commit_attempts(self, name: str, rows: list[Row], high: int) -> int:
        for attempt in range(_COMMIT_ATTEMPTS):
            table = self._catalog.table(name, fresh=True)
            done = int(table.properties.get(JOURNAL_SEQ_PROPERTY, "0"))
            pending = [r for r in rows if r[SEQ] > done]
            if not pending:
                return 0
            data = rows_to_arrow(pending)
            started = time.perf_counter()
            try:
                self._catalog.guard.write(functools.partial(_append, table, data, high), "lake.commit")
            except (CommitFailedException, CommitStateUnknownException, ValueError):
                # A concurrent commit (compaction, another writer) won; pyiceberg reports a stale
                # base as ValueError. Retrying is safe: the journal position is re-read first.
                LAKE_COMMITS.labels(name, "conflict").inc()
                time.sleep(0.05 * (attempt + 1))
                continue
            except Exception:
                LAKE_COMMITS.labels(name, "error").inc()
                raise
            elapsed = time.perf_counter() - started
            self.stats.commit_seconds.append(elapsed)
            LAKE_COMMITS.labels(name, "ok").inc()
            LAKE_COMMIT_SECONDS.labels(name).observe(elapsed)
            self._catalog.remember(name, table)
            snapshot = table.current_snapshot()
            summary = snapshot.summary if snapshot is not None else None
            files = int((summary.get("added-data-files") if summary else None) or 0)
            self.stats.data_files += files
            LAKE_FILES_WRITTEN.labels(name).inc(files)
            self.stats.commits += 1
            self.stats.rows += len(pending)
            return len(pending)
        raise LakeUnavailableError("the lake commit kept conflicting")

    def _prune(self) -> None:
        cutoff = int(datetime.now(UTC).timestamp() * 1_000_000) - self._retention_us
        self._source.prune_bodies(self._source.committed_seq(), cutoff)


class StandbyLakeWriter(LakeWriter):
    """A gateway's writer while a separate ``fhirlake writer`` process commits to Iceberg: it never
    takes the single-committer lock (not even when the gateway stops), so it never commits."""

    def holds_lock(self) -> bool:
        return False

    def start(self) -> None:
        pass

    def stop(self, *, drain: bool = True) -> None:
        pass


def _append(table: Table, data: pa.Table, high: int) -> None:
    """One Iceberg commit: the rows and the journal position they bring the table to."""
    with table.transaction() as tx:
        tx.append(data, snapshot_properties={"fhirlake.journal-seq-high": str(high)})
        tx.set_properties({JOURNAL_SEQ_PROPERTY: str(high)})
