"""The key store: wrapped data keys in one SQLite table under ``keys/``.

A row per data key (tenant, subject, key id, the KEK that wraps it, the
wrapped bytes). Subjects are ``patient:<patient key>`` (one DEK per patient),
``tenant`` (resources outside any patient compartment) and ``index`` (the
blind-index key). Shredding deletes a row with SQLite's ``secure_delete`` on
and a rollback journal that is unlinked after each write, records a tombstone,
and does the same in every registered copy of the store (backups, replicas).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from security.errors import KeyStoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    key_id BLOB PRIMARY KEY, tenant TEXT NOT NULL, subject TEXT NOT NULL,
    kek_id TEXT NOT NULL, wrapped BLOB NOT NULL, created INTEGER NOT NULL,
    UNIQUE (tenant, subject));
CREATE INDEX IF NOT EXISTS data_keys_kek ON data_keys(kek_id);
CREATE TABLE IF NOT EXISTS shredded (
    tenant TEXT NOT NULL, subject TEXT NOT NULL, key_id BLOB, shredded_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, subject));
CREATE TABLE IF NOT EXISTS copies (path TEXT PRIMARY KEY, added INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: bytes
    tenant: str
    subject: str
    kek_id: str
    wrapped: bytes


@dataclass(slots=True)
class ShredReport:
    destroyed: int = 0  # rows deleted across the store and its copies
    copies_reached: list[str] = field(default_factory=list)
    copies_missing: list[str] = field(default_factory=list)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    # A rollback journal that is deleted after each write, and zeroed free space:
    # a shredded key leaves no copy in a -wal file or on a free page.
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(_SCHEMA)
    return conn


_COLUMNS = "key_id, tenant, subject, kek_id, wrapped"


def _stored(row: tuple[Any, ...] | None) -> StoredKey | None:
    if row is None:
        return None
    return StoredKey(bytes(row[0]), str(row[1]), str(row[2]), str(row[3]), bytes(row[4]))


class KeyStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        try:
            self._conn = _connect(path)
        except sqlite3.Error:
            raise KeyStoreError("the key store cannot be opened") from None
        path.chmod(0o600)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyStore({self.path.name})"

    def close(self) -> None:
        self._conn.close()

    def get(self, tenant: str, subject: str) -> StoredKey | None:
        """The data key of ``subject``, or None."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM data_keys WHERE tenant=? AND subject=?",  # noqa: S608
                (tenant, subject),
            ).fetchone()
        return _stored(row)

    def get_by_id(self, key_id: bytes) -> StoredKey | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM data_keys WHERE key_id=?", (key_id,)).fetchone()  # noqa: S608
        return _stored(row)

    def insert(self, key: StoredKey) -> StoredKey:
        """Store ``key`` durably unless the subject has one already; returns the subject's key.

        Raises KeyStoreError when the subject was shredded.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._shredded(key.tenant, key.subject):
                    raise KeyStoreError("the subject of this key was shredded")
                self._conn.execute(
                    f"INSERT OR IGNORE INTO data_keys({_COLUMNS}, created) VALUES (?,?,?,?,?,?)",  # noqa: S608
                    (key.key_id, key.tenant, key.subject, key.kek_id, key.wrapped, time.time_ns() // 1000),
                )
                row = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM data_keys WHERE tenant=? AND subject=?",  # noqa: S608
                    (key.tenant, key.subject),
                ).fetchone()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        stored = _stored(row)
        assert stored is not None
        return stored

    def is_shredded(self, tenant: str, subject: str) -> bool:
        with self._lock:
            return self._shredded(tenant, subject)

    def _shredded(self, tenant: str, subject: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM shredded WHERE tenant=? AND subject=?", (tenant, subject)).fetchone()
        return row is not None

    def shredded_key(self, key_id: bytes) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM shredded WHERE key_id=?", (key_id,)).fetchone() is not None

    def epoch(self) -> int:
        """A counter that every shred increments (processes poll it to drop cached keys)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE name='shred_epoch'").fetchone()
        return 0 if row is None else int(row[0])

    def shredded_since(self, after_us: int) -> list[tuple[str, bytes | None]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT subject, key_id FROM shredded WHERE shredded_at >= ?", (after_us,)
            ).fetchall()
        return [(str(r[0]), None if r[1] is None else bytes(r[1])) for r in rows]

    def shred(self, tenant: str, subject: str) -> ShredReport:
        """Destroy the subject's data key here and in every registered copy; record a tombstone."""
        report = ShredReport()
        with self._lock:
            report.destroyed += _shred_in(self._conn, tenant, subject)
            copies = [str(r[0]) for r in self._conn.execute("SELECT path FROM copies ORDER BY path")]
        for copy in copies:
            if not Path(copy).exists():
                report.copies_missing.append(copy)
                continue
            conn = _connect(Path(copy))
            try:
                report.destroyed += _shred_in(conn, tenant, subject)
            finally:
                conn.close()
            report.copies_reached.append(copy)
        return report

    def setting(self, name: str, default: str) -> str:
        """A value recorded once for the life of the data dir (first writer wins)."""
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO state(name, value) VALUES (?, ?)", (f"setting:{name}", default))
            row = self._conn.execute("SELECT value FROM state WHERE name=?", (f"setting:{name}",)).fetchone()
        return str(row[0])

    # -- rotation ---------------------------------------------------------------------------

    def keys_not_under(self, tenant: str, kek_id: str, limit: int) -> list[StoredKey]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM data_keys WHERE tenant=? AND kek_id<>? LIMIT ?",  # noqa: S608
                (tenant, kek_id, limit),
            ).fetchall()
        return [k for k in map(_stored, rows) if k is not None]

    def rewrapped(self, key: StoredKey, kek_id: str, wrapped: bytes) -> bool:
        """Replace the wrapping of ``key`` if nobody changed it meanwhile (compare and set)."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE data_keys SET kek_id=?, wrapped=? WHERE key_id=? AND kek_id=?",
                (kek_id, wrapped, key.key_id, key.kek_id),
            )
        return cur.rowcount == 1

    def count_by_kek(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT kek_id, COUNT(*) FROM data_keys GROUP BY kek_id").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # -- copies -----------------------------------------------------------------------------

    def backup_to(self, dest: Path) -> None:
        """Write a consistent copy to ``dest`` and register it, so shredding reaches it too."""
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = sqlite3.connect(dest)
        try:
            with self._lock:
                self._conn.backup(target)
        finally:
            target.close()
        dest.chmod(0o600)
        self.register_copy(dest)

    def register_copy(self, path: Path) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO copies(path, added) VALUES (?, ?)", (str(path.resolve()), time.time_ns() // 1000)
            )

    def copies(self) -> Iterator[str]:
        with self._lock:
            rows = self._conn.execute("SELECT path FROM copies ORDER BY path").fetchall()
        return (str(r[0]) for r in rows)


def _shred_in(conn: sqlite3.Connection, tenant: str, subject: str) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT key_id FROM data_keys WHERE tenant=? AND subject=?", (tenant, subject)).fetchone()
        deleted = conn.execute("DELETE FROM data_keys WHERE tenant=? AND subject=?", (tenant, subject)).rowcount
        conn.execute(
            "INSERT OR IGNORE INTO shredded(tenant, subject, key_id, shredded_at) VALUES (?,?,?,?)",
            (tenant, subject, None if row is None else row[0], time.time_ns() // 1000),
        )
        conn.execute(
            "INSERT INTO state(name, value) VALUES ('shred_epoch', '1') "
            "ON CONFLICT(name) DO UPDATE SET value=CAST(value AS INTEGER) + 1"
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("VACUUM")  # rewrite the file: no page keeps the wrapped key
    return int(deleted)
