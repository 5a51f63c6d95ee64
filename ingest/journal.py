"""Durable acceptance: the journal of accepted transactions and the version index.

One SQLite database (WAL, ``synchronous=FULL``) holds, per resource version, the
row that will be written to the lake (the sealed body and PHI fields until they
have reached the lake; nothing in it is PHI in clear),
plus the current-version index, blind identifier tokens and idempotency keys.
A single writer thread applies transactions in *groups*: each request runs in
its own savepoint, the whole group is made durable by one commit (one fsync),
and only then are the requests answered. A 2xx therefore survives ``kill -9``.

The lake writer reads rows by ``seq`` and records how far each Iceberg table
has come; nothing here imports pyiceberg.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lake.rows import COLUMN_COUNT, Row

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    seq INTEGER NOT NULL, last_updated INTEGER NOT NULL, deleted INTEGER NOT NULL,
    patient_key TEXT, status TEXT, code_system TEXT, code TEXT, effective_year INTEGER,
    value_num REAL, value_unit TEXT, body BLOB, phi BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS versions_key ON versions(rtype, id, version);
CREATE INDEX IF NOT EXISTS versions_seq ON versions(seq);
CREATE TABLE IF NOT EXISTS current (
    rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL,
    patient_key TEXT, last_updated INTEGER NOT NULL, category TEXT,
    PRIMARY KEY (rtype, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS current_patient ON current(patient_key, rtype);
CREATE TABLE IF NOT EXISTS tokens (
    rtype TEXT NOT NULL, token TEXT NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (rtype, token, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_id ON tokens(rtype, id);
CREATE TABLE IF NOT EXISTS patient_access (
    patient_key TEXT NOT NULL, attr TEXT NOT NULL, value TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS patient_access_key ON patient_access(patient_key);
CREATE INDEX IF NOT EXISTS patient_access_source ON patient_access(rtype, id);
CREATE INDEX IF NOT EXISTS patient_access_value ON patient_access(attr, value);
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY, accepted INTEGER NOT NULL, entries INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, status INTEGER NOT NULL,
    response BLOB NOT NULL, created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency(created);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

VERSION_COLUMNS = (
    "rtype, id, version, seq, last_updated, deleted, patient_key, status, code_system, code, "
    "effective_year, value_num, value_unit, body, phi"
)


@dataclass(frozen=True, slots=True)
class Current:
    version: int
    deleted: bool
    patient_key: str | None
    last_updated: int


class JournalClosedError(RuntimeError):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class Journal:
    """The journal database; ``submit`` runs a write job inside a group commit."""

    def __init__(
        self,
        path: Path,
        max_wait_ms: float = 2.0,
        idempotency_ttl_s: float = 72 * 3600.0,
        guard: Callable[[], None] | None = None,
    ) -> None:
        """``guard`` runs before every group commit; if it raises, the group fails with its error
        (the DR fence: a fenced region acknowledges nothing)."""
        self.path = path
        self._guard = guard
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(path)
        self._writer.executescript(_SCHEMA)
        self._max_wait = max_wait_ms / 1000.0
        self._idempotency_ttl_us = int(idempotency_ttl_s * 1_000_000)
        self._next_expiry = 0.0
        self._jobs: list[tuple[Callable[[WriteContext], Any], Future[Any]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._local = threading.local()
        self._feed = _connect(path)
        self._feed_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    # -- writes ---------------------------------------------------------------------------------

    def submit(self, job: Callable[[WriteContext], T]) -> Future[T]:
        """Queue ``job``; its future resolves after the group holding it is durable."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise JournalClosedError("journal is closed")
            self._jobs.append((job, future))
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs and self._closed:
                    return
            if self._max_wait:
                time.sleep(self._max_wait)  # let concurrent requests join this group
            with self._cond:
                batch, self._jobs = self._jobs, []
            self._apply_group(batch)

    def _apply_group(self, batch: list[tuple[Callable[[WriteContext], Any], Future[Any]]]) -> None:
        conn = self._writer
        results: list[tuple[Future[Any], bool, Any]] = []
        try:
            if self._guard is not None:
                self._guard()
            conn.execute("BEGIN IMMEDIATE")
            # Read under the write lock: several gateway processes may share this journal.
            next_seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM transactions").fetchone()[0])
            for job, future in batch:
                conn.execute("SAVEPOINT job")
                ctx = WriteContext(conn, next_seq)
                try:
                    value = job(ctx)
                    ctx.flush()
                except BaseException as exc:  # the job's own error goes to its caller only
                    ctx.discard()
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((future, False, exc))
                    continue
                conn.execute("RELEASE job")
                next_seq = ctx.next_seq
                results.append((future, True, value))
            self._expire_idempotency(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, ok, value in results:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _expire_idempotency(self, conn: sqlite3.Connection) -> None:
        """Forget idempotency keys past their TTL (at most once a minute, inside a group)."""
        now = time.time()
        if now < self._next_expiry:
            return
        self._next_expiry = now + 60
        conn.execute("DELETE FROM idempotency WHERE created < ?", (int(now * 1_000_000) - self._idempotency_ttl_us,))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self._writer.close()
        self._feed.close()

    # -- reads (any thread) ------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def current(self, rtype: str, rid: str) -> Current | None:
        return current_of(self.reader(), rtype, rid)

    def version(self, rtype: str, rid: str, version: int) -> tuple[Any, ...] | None:
        sql = f"SELECT {VERSION_COLUMNS} FROM versions WHERE rtype=? AND id=? AND version=?"  # noqa: S608
        row: tuple[Any, ...] | None = self.reader().execute(sql, (rtype, rid, version)).fetchone()
        return row

    def ids_by_token(self, rtype: str, tokens: Iterable[str]) -> list[str]:
        return ids_by_token(self.reader(), rtype, tokens)

    def last_seq(self) -> int:
        row = self.reader().execute("SELECT COALESCE(MAX(seq), 0) FROM transactions").fetchone()
        return int(row[0])

    def idempotent_response(self, key: str) -> tuple[str, int, bytes] | None:
        row = (
            self.reader()
            .execute("SELECT request_hash, status, response FROM idempotency WHERE key=?", (key,))
            .fetchone()
        )
        return None if row is None else (row[0], int(row[1]), bytes(row[2]))

    # -- lake.rows.RowSource ----------------------------------------------------------------------

    def committed_seq(self) -> int:
        return int(self.state("lake_seq") or 0)

    def pending(self, after_seq: int) -> tuple[int, int | None]:
        row = (
            self.reader()
            .execute("SELECT COALESCE(SUM(entries), 0), MIN(accepted) FROM transactions WHERE seq > ?", (after_seq,))
            .fetchone()
        )
        return int(row[0]), None if row[1] is None else int(row[1])

    def window_end(self, after_seq: int, max_rows: int) -> int:
        """The last seq of the longest run of whole transactions after ``after_seq`` within ``max_rows``."""
        conn = self.reader()
        rows = conn.execute(
            "SELECT seq, entries FROM transactions WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, max_rows)
        ).fetchall()
        end, total = after_seq, 0
        for seq, entries in rows:
            if total and total + entries > max_rows:
                break
            end, total = int(seq), total + int(entries)
        return end

    def rows_between(self, after_seq: int, upto_seq: int) -> list[Row]:
        rows = (
            self.reader()
            .execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE seq > ? AND seq <= ? ORDER BY seq",  # noqa: S608
                (after_seq, upto_seq),
            )
            .fetchall()
        )
        return rows

    def mark_committed(self, seq: int) -> None:
        with self._feed_lock:
            self._feed.execute(
                "INSERT INTO state(name, value) VALUES ('lake_seq', ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (str(seq),),
            )

    def prune_bodies(self, upto_seq: int, older_than_us: int) -> int:
        """Drop bodies that the lake already holds and that are past hot retention.

        Works from a ``pruned_seq`` watermark so each call touches only new rows.
        """
        with self._feed_lock:
            done = int(self.state("pruned_seq") or 0)
            row = self._feed.execute(
                "SELECT MAX(seq) FROM transactions WHERE seq > ? AND seq <= ? AND accepted < ?",
                (done, upto_seq, older_than_us),
            ).fetchone()
            if row[0] is None:
                return 0
            boundary = int(row[0])
            self._feed.execute("BEGIN IMMEDIATE")
            cur = self._feed.execute(
                "UPDATE versions SET body=NULL, phi=NULL WHERE seq > ? AND seq <= ? AND body IS NOT NULL",
                (done, boundary),
            )
            self._feed.execute(
                "INSERT INTO state(name, value) VALUES ('pruned_seq', ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (str(boundary),),
            )
            self._feed.execute("COMMIT")
            return int(cur.rowcount)

    def state(self, name: str) -> str | None:
        row = self.reader().execute("SELECT value FROM state WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])


def current_of(conn: sqlite3.Connection, rtype: str, rid: str) -> Current | None:
    row = conn.execute(
        "SELECT version, deleted, patient_key, last_updated FROM current WHERE rtype=? AND id=?", (rtype, rid)
    ).fetchone()
    return None if row is None else Current(int(row[0]), bool(row[1]), row[2], int(row[3]))


def ids_by_token(conn: sqlite3.Connection, rtype: str, tokens: Iterable[str]) -> list[str]:
    wanted = list(tokens)
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(
        f"SELECT DISTINCT t.id FROM tokens t JOIN current c ON c.rtype=t.rtype AND c.id=t.id "  # noqa: S608
        f"WHERE t.rtype=? AND t.token IN ({marks}) AND c.deleted=0 ORDER BY t.id",
        (rtype, *wanted),
    ).fetchall()
    return [str(r[0]) for r in rows]


class WriteContext:
    """What a write job sees: the writer connection inside its savepoint.

    Version rows and tokens are staged and inserted in bulk; every read through
    the context flushes them first, so a job always reads its own writes.
    """

    def __init__(self, conn: sqlite3.Connection, next_seq: int) -> None:
        self.conn = conn
        self.next_seq = next_seq
        self._rows: list[tuple[Any, ...]] = []
        self._dropped_tokens: list[tuple[str, str]] = []
        self._tokens: list[tuple[str, str, str]] = []
        self._categories: list[tuple[str, str, str]] = []
        self.rows_written = 0

    @property
    def pending_seq(self) -> int:
        """The seq the rows of the current job carry (allocated by ``allocate_seq``)."""
        return self.next_seq

    def flush(self) -> None:
        """Insert everything staged (called before reads and at the end of a job)."""
        if self._rows:
            self._insert_versions(self._rows)
            self._rows = []
        if self._dropped_tokens:
            self.conn.executemany("DELETE FROM tokens WHERE rtype=? AND id=?", self._dropped_tokens)
            self._dropped_tokens = []
        if self._tokens:
            self.conn.executemany("INSERT OR IGNORE INTO tokens(rtype, token, id) VALUES (?,?,?)", self._tokens)
            self._tokens = []
        if self._categories:
            self.conn.executemany("UPDATE current SET category=? WHERE rtype=? AND id=?", self._categories)
            self._categories = []

    def discard(self) -> None:
        """Forget staged writes (before rolling a savepoint back)."""
        self._rows, self._dropped_tokens, self._tokens, self._categories = [], [], [], []

    def allocate_seq(self, entries: int, accepted_us: int) -> int:
        seq = self.next_seq
        self.conn.execute(
            "INSERT INTO transactions(seq, accepted, entries) VALUES (?,?,?)", (seq, accepted_us, entries)
        )
        self.next_seq += 1
        return seq

    def current(self, rtype: str, rid: str) -> Current | None:
        self.flush()
        return current_of(self.conn, rtype, rid)

    def ids_by_token(self, rtype: str, tokens: Iterable[str]) -> list[str]:
        self.flush()
        return ids_by_token(self.conn, rtype, tokens)

    def write_versions(self, rows: list[tuple[Any, ...]]) -> None:
        """Stage version rows (``VERSION_COLUMNS`` order); they also move the current pointers."""
        self._rows.extend(rows)
        self.rows_written += len(rows)

    def _insert_versions(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(f"INSERT INTO versions({VERSION_COLUMNS}) VALUES ({','.join('?' * COLUMN_COUNT)})", rows)  # noqa: S608
        self.conn.executemany(
            "INSERT INTO current(rtype, id, version, deleted, patient_key, last_updated) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(rtype, id) DO UPDATE SET version=excluded.version, deleted=excluded.deleted, "
            "patient_key=excluded.patient_key, last_updated=excluded.last_updated",
            [(r[0], r[1], r[2], r[5], r[6], r[4]) for r in rows],
        )

    def set_category(self, rtype: str, rid: str, category: str | None) -> None:
        """Stage the clear category codes of the current version (None: keep the column empty)."""
        if category is not None:
            self._categories.append((category, rtype, rid))

    def replace_access(self, rtype: str, rid: str, patient_key: str | None, refs: Iterable[tuple[str, str]]) -> None:
        """Record who cares for the patient, as stated by this resource (Patient, CareTeam)."""
        self.conn.execute("DELETE FROM patient_access WHERE rtype=? AND id=?", (rtype, rid))
        if patient_key is not None:
            self.conn.executemany(
                "INSERT INTO patient_access(patient_key, attr, value, rtype, id) VALUES (?,?,?,?,?)",
                [(patient_key, attr, value, rtype, rid) for attr, value in refs],
            )

    def replace_tokens(self, rtype: str, rid: str, tokens: Iterable[str], *, fresh: bool = False) -> None:
        """Stage the identifier tokens of a resource (``fresh``: it had none before)."""
        if not fresh:
            self._dropped_tokens.append((rtype, rid))
        self._tokens.extend((rtype, t, rid) for t in tokens)

    def idempotent_response(self, key: str) -> tuple[str, int, bytes] | None:
        self.flush()
        row = self.conn.execute("SELECT request_hash, status, response FROM idempotency WHERE key=?", (key,)).fetchone()
        return None if row is None else (row[0], int(row[1]), bytes(row[2]))

    def remember_response(self, key: str, request_hash: str, status: int, response: bytes, now_us: int) -> None:
        self.conn.execute(
            "INSERT INTO idempotency(key, request_hash, status, response, created) VALUES (?,?,?,?,?)",
            (key, request_hash, status, response, now_us),
        )


def cares_for(conn: sqlite3.Connection, patient_key: str, organization: str | None, member: str | None) -> bool:
    """Whether the organization or practitioner is recorded as caring for the patient."""
    row = conn.execute(
        "SELECT 1 FROM patient_access WHERE patient_key=? "
        "AND ((attr='org' AND value=?) OR (attr='member' AND value=?))",
        (patient_key, organization or "", member or ""),
    ).fetchone()
    return row is not None
