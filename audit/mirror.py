"""A background mirror of the audit trails into the Iceberg audit table (``lake.audit_table``).

Each round reads every ``trail-*`` directory under the audit dir, takes the event records above
the seq the table already holds for that trail (checkpoints are skipped) and appends them; the
table records the new seq in the same commit, so every record lands exactly once even if the
process dies mid-round. The trail is only read, never changed, and remains the record of truth:
the chain is not verified here (``fhirlake audit verify``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import structlog

from audit.chain import canonical
from audit.errors import AuditIntegrityError
from audit.reports import action, client_id, fhir_user, patient_keys, purposes, recorded, resources, role
from audit.segments import segment_paths
from lake.audit_table import AuditRow, AuditTable

log = structlog.get_logger("audit.mirror")

Record = dict[str, Any]


def trail_dirs(audit_dir: Path) -> list[Path]:
    """The ``trail-*`` directories under ``audit_dir``, in name order."""
    return sorted(p for p in Path(audit_dir).glob("trail-*") if p.is_dir())


def read_records(trail_dir: Path, after_seq: int = 0) -> Iterator[Record]:
    """The event records of a trail with ``seq > after_seq``, in order; checkpoints are skipped.

    A torn last line (never acknowledged) ends the read. Raises AuditIntegrityError if a complete
    line is not a JSON record, OSError if a segment cannot be read.
    """
    for _, path in segment_paths(trail_dir):
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    return
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise AuditIntegrityError(
                        "record", f"{trail_dir.name}/{path.name} line {number} is not JSON"
                    ) from None
                if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
                    raise AuditIntegrityError("record", f"{trail_dir.name}/{path.name} line {number} has no seq")
                if record["seq"] > after_seq and isinstance(record.get("event"), dict):
                    yield record


def row_of(trail: str, record: Record) -> AuditRow:
    """The audit table row of one event record. Raises AuditIntegrityError if the event is malformed."""
    event = record["event"]
    try:
        return AuditRow(
            trail=trail,
            seq=record["seq"],
            hash=str(record["hash"]),
            recorded=recorded(event),
            action=action(event),
            outcome=str(event.get("outcome", "")),
            client_id=client_id(event) or None,
            role=role(event) or None,
            fhir_user=fhir_user(event) or None,
            patient_keys=patient_keys(event),
            resources=resources(event),
            purpose_of_use=purposes(event),
            event=canonical(event).decode(),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise AuditIntegrityError("record", f"{trail} seq {record.get('seq')} is not a readable AuditEvent") from None


class AuditMirror:
    """Copies new audit records into an :class:`~lake.audit_table.AuditTable`, once or every ``interval_s``."""

    def __init__(self, audit_dir: Path, table: AuditTable, *, interval_s: float = 5.0, max_rows: int = 50_000) -> None:
        self._audit_dir = Path(audit_dir)
        self._table = table
        self._interval = interval_s
        self._max_rows = max_rows
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round = threading.Lock()
        self.last_error: str | None = None

    def run_once(self) -> int:
        """Mirror every trail; returns the rows appended.

        Every trail is tried even if one fails; the first failure is then re-raised
        (AuditIntegrityError for an unreadable trail, LakeError for the table, OSError).
        """
        appended = 0
        failure: Exception | None = None
        with self._round:
            for trail_dir in trail_dirs(self._audit_dir):
                try:
                    appended += self._mirror_trail(trail_dir)
                except Exception as exc:  # one broken trail must not hold the others back
                    log.error("audit.mirror_failed", trail=trail_dir.name, error=type(exc).__name__)
                    failure = failure or exc
        if failure is not None:
            raise failure
        return appended

    def _mirror_trail(self, trail_dir: Path) -> int:
        trail = trail_dir.name
        done = self._table.mirrored_seq(trail)
        appended = 0
        batch: list[AuditRow] = []
        for record in read_records(trail_dir, done):
            batch.append(row_of(trail, record))
            if len(batch) >= self._max_rows:  # bounds memory on a first run over a long trail
                appended += self._table.append(batch, trail, batch[-1].seq)
                batch = []
        if batch:
            appended += self._table.append(batch, trail, batch[-1].seq)
        return appended

    def catch_up(self) -> int:
        """One last round at shutdown; a failure is logged (the next start retries), never raised."""
        try:
            return self.run_once()
        except Exception as exc:  # the local trail is the record; the Iceberg copy catches up later
            log.warning("audit_mirror_failed", error=type(exc).__name__)
            return 0

    def start(self) -> None:
        """Start the daemon thread that calls :meth:`run_once` every ``interval_s``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-mirror", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after its current round (records not yet mirrored wait for the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.run_once()
                self.last_error = None
                if rows:
                    log.info("audit.mirrored", rows=rows)
            except Exception as exc:  # keep the thread alive: the next round retries from the table's seq
                self.last_error = type(exc).__name__
            self._stop.wait(self._interval)
