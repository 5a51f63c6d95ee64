"""Break-glass: a clinician reads outside its care team, for a stated reason, for a bounded time.

A grant names the clinician, the patient (by pseudonymous key), the purpose of
use (must be ``BTG``) and a reason, which may itself mention PHI and is
therefore stored sealed. It lasts at most 60 minutes and is always flagged
for review: every grant stays ``pending`` until a compliance officer reviews it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from security.errors import SecurityError
from security.sealing import RowSealer

PURPOSE_BTG = "BTG"  # HL7 v3 PurposeOfUse: break the glass


class BreakGlassError(SecurityError):
    code = "break-glass"


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    client_id: str
    patient_key: str
    opened_us: int
    expires_us: int
    review: str  # pending | reviewed


class BreakGlassLedger:
    def __init__(self, path: Path, sealer: RowSealer, clock: object = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS grants (grant_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, "
            "fhir_user TEXT, patient_key TEXT NOT NULL, purpose TEXT NOT NULL, reason BLOB NOT NULL, "
            "opened INTEGER NOT NULL, expires INTEGER NOT NULL, review TEXT NOT NULL)"
        )
        self._conn.execute("CREATE INDEX IF NOT EXISTS grants_client ON grants(client_id, patient_key, expires)")
        path.chmod(0o600)
        self._lock = threading.Lock()
        self._sealer = sealer
        self._clock = clock

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)  # type: ignore[operator]

    def open(
        self, client_id: str, fhir_user: str | None, patient_key: str, purpose: str, reason: str, minutes: int
    ) -> Grant:
        """Open a grant. Raises BreakGlassError without a reason or with another purpose of use."""
        if purpose != PURPOSE_BTG:
            raise BreakGlassError("break-glass needs purpose of use BTG")
        if len(reason.strip()) < 4:
            raise BreakGlassError("break-glass needs a stated reason")
        grant_id = str(uuid.uuid4())
        sealed = self._sealer.seal("tenant", "BreakGlass", grant_id, 1, [("reason", reason.encode())])[0]
        now = self._now_us()
        expires = now + min(minutes, 60) * 60_000_000
        with self._lock:
            self._conn.execute(
                "INSERT INTO grants VALUES (?,?,?,?,?,?,?,?,'pending')",
                (grant_id, client_id, fhir_user, patient_key, purpose, sealed, now, expires),
            )
        return Grant(grant_id, client_id, patient_key, now, expires, "pending")

    def active(self, client_id: str, patient_key: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM grants WHERE client_id=? AND patient_key=? AND expires>?",
                (client_id, patient_key, self._now_us()),
            ).fetchone()
        return row is not None

    def active_keys(self, client_id: str) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT patient_key FROM grants WHERE client_id=? AND expires>?", (client_id, self._now_us())
            ).fetchall()
        return [str(r[0]) for r in rows]

    def grants(self, *, pending_only: bool = False) -> list[Grant]:
        sql = "SELECT grant_id, client_id, patient_key, opened, expires, review FROM grants"
        with self._lock:
            rows = self._conn.execute(sql + (" WHERE review='pending'" if pending_only else "") + " ORDER BY opened")
            return [Grant(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), str(r[5])) for r in rows]

    def reason(self, grant_id: str) -> str:
        with self._lock:
            row = self._conn.execute("SELECT reason FROM grants WHERE grant_id=?", (grant_id,)).fetchone()
        if row is None:
            raise BreakGlassError("no such grant")
        return self._sealer.open("BreakGlass", grant_id, 1, "reason", bytes(row[0])).decode()

    def close(self) -> None:
        self._conn.close()
