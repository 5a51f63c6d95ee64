"""The raw zone and the dead-letter store: every payload an adapter received, sealed, by hash.

One SQLite file under ``<data-dir>/ingest/raw.db`` (no PHI in its name or in
any clear column). A raw payload is sealed with AES-256-GCM under the tenant's
data key (its patient may not be known yet), bound to its SHA-256; the clear
columns are the adapter, the content type, the time of receipt and the size.
A payload that could not be stored gets a dead letter: its reason is an error
code and PHI-free diagnostics (element paths, segment positions, codes).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from security.keys import TENANT_SUBJECT
from security.sealing import RowSealer

RAW_TYPE = "RawPayload"  # the record type sealed values are bound to
_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw (
    sha TEXT PRIMARY KEY, adapter TEXT NOT NULL, content_type TEXT, received_us INTEGER NOT NULL,
    size INTEGER NOT NULL, sealed BLOB NOT NULL, status TEXT NOT NULL DEFAULT 'received');
CREATE INDEX IF NOT EXISTS raw_by_adapter ON raw (adapter, received_us);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sha TEXT NOT NULL REFERENCES raw(sha), adapter TEXT NOT NULL,
    received_us INTEGER NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'open', updated_us INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS dead_by_sha ON dead_letters (sha, adapter);
"""


@dataclass(frozen=True, slots=True)
class RawRecord:
    sha: str
    adapter: str
    content_type: str | None
    received_us: int
    size: int
    status: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sha: str
    adapter: str
    received_us: int
    code: str
    reason: str
    attempts: int
    status: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "adapter": self.adapter,
            "payloadSha256": self.sha,
            "received_us": self.received_us,
            "code": self.code,
            "reason": self.reason,
            "attempts": self.attempts,
            "status": self.status,
        }


def now_us() -> int:
    return time.time_ns() // 1000


class RawZone:
    def __init__(self, path: Path, sealer: RowSealer) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._sealer = sealer

    def __repr__(self) -> str:
        return "RawZone(sealed)"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def keep(self, sha: str, adapter: str, content_type: str | None, payload: bytes) -> RawRecord:
        """Seal and store ``payload`` (once per hash and adapter); returns its record."""
        self._sealer.prepare([TENANT_SUBJECT])
        sealed = self._sealer.seal(TENANT_SUBJECT, RAW_TYPE, sha, 1, [("payload", payload)])[0]
        received = now_us()
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO raw (sha, adapter, content_type, received_us, size, sealed) "
                "VALUES (?,?,?,?,?,?)",
                (sha, adapter, (content_type or "")[:100] or None, received, len(payload), sealed),
            )
        record = self.record(sha)
        assert record is not None
        return record

    def record(self, sha: str) -> RawRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT sha, adapter, content_type, received_us, size, status FROM raw WHERE sha=?", (sha,)
            ).fetchone()
        return None if row is None else RawRecord(*row)

    def open(self, sha: str) -> bytes:
        """The raw payload (raises KeyError when unknown, security errors when it fails to open)."""
        with self._lock:
            row = self._conn.execute("SELECT sealed FROM raw WHERE sha=?", (sha,)).fetchone()
        if row is None:
            raise KeyError(sha)
        return self._sealer.open(RAW_TYPE, sha, 1, "payload", row[0])

    def mark(self, sha: str, status: str) -> None:
        with self._lock:
            self._conn.execute("UPDATE raw SET status=? WHERE sha=?", (status, sha))

    def since(self, adapter: str, since_us: int) -> Iterator[RawRecord]:
        """Raw payloads of ``adapter`` received at or after ``since_us``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT sha, adapter, content_type, received_us, size, status FROM raw "
                "WHERE adapter=? AND received_us>=? ORDER BY received_us, sha",
                (adapter, since_us),
            ).fetchall()
        for row in rows:
            yield RawRecord(*row)

    def dead_letter(self, sha: str, adapter: str, code: str, reason: str) -> DeadLetter:
        """Record (or, for a payload already dead-lettered, update) why ``sha`` could not be stored."""
        stamp = now_us()
        with self._lock:
            self._conn.execute(
                "INSERT INTO dead_letters (sha, adapter, received_us, code, reason, updated_us) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (sha, adapter) DO UPDATE SET code=excluded.code, reason=excluded.reason, "
                "attempts=attempts+1, status='open', updated_us=excluded.updated_us",
                (sha, adapter, stamp, code, reason[:2000], stamp),
            )
            self._conn.execute("UPDATE raw SET status='dead' WHERE sha=?", (sha,))
        letter = self.letter_by_sha(sha, adapter)
        assert letter is not None
        return letter

    def resolve(self, sha: str, adapter: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE dead_letters SET status='resolved', updated_us=? WHERE sha=? AND adapter=?",
                (now_us(), sha, adapter),
            )

    def letters(self, status: str | None = "open", limit: int = 1000) -> list[DeadLetter]:
        query = "SELECT id, sha, adapter, received_us, code, reason, attempts, status FROM dead_letters"
        params: tuple[object, ...] = ()
        if status:
            query += " WHERE status=?"
            params = (status,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [DeadLetter(*row) for row in rows]

    def letter(self, letter_id: int) -> DeadLetter | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, sha, adapter, received_us, code, reason, attempts, status FROM dead_letters WHERE id=?",
                (letter_id,),
            ).fetchone()
        return None if row is None else DeadLetter(*row)

    def letter_by_sha(self, sha: str, adapter: str) -> DeadLetter | None:
        with self._lock:
            row = self._conn.execute("SELECT id FROM dead_letters WHERE sha=? AND adapter=?", (sha, adapter)).fetchone()
        return None if row is None else self.letter(int(row[0]))
