"""FHIR Bulk Data ``$export``: asynchronous jobs writing sealed NDJSON files, one caller each.

A kick-off is authorized and planned at once (types, patients, filters) and
runs in a background thread. Each type is streamed: rows of the lake snapshot
pinned at the start of the type, then the versions accepted after that
snapshot straight from the journal, each checked against the current index
(the caller's visibility, ``_since``, ``_typeFilter``) in batches, so memory
stays bounded by one batch whatever the export's size. Files are sealed at
rest under a data key of the job (``security/sealed_file.py``); deleting the
job destroys that key before the files. Only the caller that asked can read
the status or the files; to anyone else a job does not exist.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
import structlog

from ingest.access import Access
from ingest.errors import ForbiddenError, InvalidInputError, Issue, ResourceNotFoundError
from ingest.fhir_types import is_supported
from ingest.search import CriteriaMatcher, UnsupportedParameter, instant_range, parse_criterion
from security.authz import Decision
from security.ciphertext import RecordRef
from security.keys import DataKeys
from security.sealed_file import SealedWriter, read_sealed

if TYPE_CHECKING:
    from ingest.reads import ResourceReads

log = structlog.get_logger("fhirlake.export")
_BATCH = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, level TEXT NOT NULL, status TEXT NOT NULL,
    created INTEGER NOT NULL, finished INTEGER, error TEXT, output TEXT NOT NULL DEFAULT '[]',
    progress TEXT NOT NULL DEFAULT '');
"""


@dataclass(slots=True)
class ExportPlan:
    level: str  # system, patient or group
    types: list[str]
    since_us: int | None = None
    patient_keys: list[str] | None = None  # group level: the members
    filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)  # type -> or of and-lists
    decisions: dict[str, Decision] = field(default_factory=dict)
    _members: frozenset[str] | None = None

    def member_set(self) -> frozenset[str] | None:
        if self.patient_keys is None:
            return None
        if self._members is None:
            self._members = frozenset(self.patient_keys)
        return self._members

    def scan_keys(self) -> list[str] | None:
        """Patient keys worth pushing into the lake scan: a few prune to their buckets, many prune nothing."""
        return self.patient_keys if self.patient_keys is not None and len(self.patient_keys) <= 32 else None


@dataclass(frozen=True, slots=True)
class JobStatus:
    id: str
    status: str  # in-progress, completed, failed
    created_us: int
    finished_us: int | None
    output: list[dict[str, Any]]
    error: str | None
    progress: str


def owner_of(access: Access | None) -> str:
    if access is None:
        return "system"
    principal = access.principal
    return f"{principal.tenant}\x1f{principal.client_id}\x1f{principal.fhir_user or ''}"


class BulkExports:
    """Kick-off, status, files and deletion of export jobs under ``<data-dir>/exports``."""

    def __init__(self, root: Path, reads: ResourceReads, keys: DataKeys | None, tenant: str) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(root / "jobs.db", check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._db.execute("UPDATE jobs SET status='failed', error='interrupted by a restart' WHERE status='in-progress'")
        self._lock = threading.Lock()
        self._reads, self._keys, self._tenant = reads, keys, tenant
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        self._cancelled: set[str] = set()

    def close(self) -> None:
        self._cancelled.update(self._running())
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._db.close()

    def _running(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status='in-progress'").fetchall()]

    # -- kick-off ----------------------------------------------------------------------------

    def plan(self, level: str, params: list[tuple[str, str]], access: Access | None, group: str | None) -> ExportPlan:
        """Check the request and the caller's rights now; raises InvalidInputError, ForbiddenError."""
        from ingest.reads import PATIENT_TYPES

        values: dict[str, list[str]] = {}
        for name, value in params:
            values.setdefault(name, []).append(value)
        unknown = set(values) - {"_type", "_since", "_typeFilter", "_outputFormat"}
        if unknown:
            raise _invalid(f"parameter '{sorted(unknown)[0]}' is not supported by $export", "not-supported")
        fmt = values.get("_outputFormat", ["application/fhir+ndjson"])[0]
        if fmt not in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
            raise _invalid("_outputFormat must be application/fhir+ndjson", "not-supported")
        asked = [t for v in values.get("_type", []) for t in v.split(",") if t]
        if any(not is_supported(t) for t in asked):
            raise _invalid("_type names an unknown resource type", "invalid")
        compartment = sorted({"Patient", *PATIENT_TYPES})
        if level != "system" and any(t not in compartment for t in asked):
            raise _invalid("patient-level exports only hold patient-compartment types", "invalid")
        plan = ExportPlan(level, asked or (compartment if level != "system" else self._present_types()))
        if "_since" in values:
            plan.since_us = instant_range(values["_since"][0])[0]
        self._filters(plan, values.get("_typeFilter", []))
        self._authorize(plan, access, explicit=bool(asked))
        if level == "group":
            plan.patient_keys = self._members(str(group), access)
        elif level == "patient":
            plan.patient_keys = None
        return plan

    def _present_types(self) -> list[str]:
        conn = self._reads.journal.reader()
        return [str(r[0]) for r in conn.execute("SELECT DISTINCT rtype FROM current WHERE deleted=0").fetchall()]

    def _filters(self, plan: ExportPlan, raw: list[str]) -> None:
        matcher = CriteriaMatcher(self._reads.journal, self._reads.pseudo, frozenset())
        for item in raw:
            rtype, _, query = item.partition("?")
            criteria = parse_qsl(query, keep_blank_values=True)
            if rtype not in plan.types or not criteria:
                raise _invalid("each _typeFilter is Type?criteria for a type of the export", "invalid")
            for name, _value in criteria:
                if not matcher.supports(rtype, parse_criterion(name, _value)):
                    raise _invalid(f"_typeFilter parameter '{name}' is not supported", "not-supported")
            plan.filters.setdefault(rtype, []).append(criteria)

    def _authorize(self, plan: ExportPlan, access: Access | None, *, explicit: bool) -> None:
        if access is None:
            return
        allowed = []
        for rtype in plan.types:
            try:
                plan.decisions[rtype] = access.require_type("search", rtype)
                allowed.append(rtype)
            except ForbiddenError:
                if explicit:
                    raise
                access.denied = False  # default types the caller may not read are left out
        plan.types = allowed

    def _members(self, group: str, access: Access | None) -> list[str]:
        stored = self._reads.read("Group", group, access)
        doc = orjson.loads(stored.body or b"{}")
        refs = [m.get("entity", {}).get("reference", "") for m in doc.get("member", []) if not m.get("inactive")]
        return [self._reads.pseudo.patient_key(r.split("/")[-1]) for r in refs if r.startswith("Patient/")]

    def start(self, plan: ExportPlan, access: Access | None) -> str:
        job = str(uuid.uuid4())
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs(id, owner, level, status, created) VALUES (?,?,?,?,?)",
                (job, owner_of(access), plan.level, "in-progress", _now_us()),
            )
        (self._root / job).mkdir(mode=0o700)
        self._pool.submit(self._run, job, plan, access)
        return job

    # -- the job -----------------------------------------------------------------------------

    def _run(self, job: str, plan: ExportPlan, access: Access | None) -> None:
        output: list[dict[str, Any]] = []
        try:
            for n, rtype in enumerate(plan.types):
                self._set(job, progress=f"{n}/{len(plan.types)} types")
                count = self._export_type(job, plan, rtype, access)
                if count:
                    output.append({"type": rtype, "file": f"{rtype}.ndjson", "count": count})
            self._set(job, status="completed", output=orjson.dumps(output).decode(), finished=_now_us())
        except _Cancelled:
            return
        except Exception as exc:  # the job fails alone; the reason names no value
            log.error("export_failed", job=job, error=type(exc).__name__)
            self._set(job, status="failed", error=getattr(exc, "code", "internal-error"), finished=_now_us())

    def _export_type(self, job: str, plan: ExportPlan, rtype: str, access: Access | None) -> int:
        allowed = self._filtered_ids(plan, rtype)
        count = 0
        with self._writer(job, rtype) as out:
            done_seq, batches = self._reads.lake_rows(rtype, plan.scan_keys())
            for rows in batches:
                if job in self._cancelled:
                    raise _Cancelled
                count += self._write_batch(out, plan, rtype, rows, allowed, access)
            for rows in self._journal_batches(rtype, done_seq):
                count += self._write_batch(out, plan, rtype, rows, allowed, access)
        if count == 0:
            (self._root / job / f"{rtype}.ndjson").unlink(missing_ok=True)
        return count

    def _filtered_ids(self, plan: ExportPlan, rtype: str) -> set[str] | None:
        if rtype not in plan.filters:
            return None
        matcher = CriteriaMatcher(self._reads.journal, self._reads.pseudo, _patient_types())
        found: set[str] = set()
        for criteria in plan.filters[rtype]:  # several _typeFilter of one type: or
            ids: set[str] | None = None
            for name, value in criteria:
                try:
                    hit = matcher.match(rtype, parse_criterion(name, value))
                except UnsupportedParameter:
                    hit = set()
                ids = hit if ids is None else ids & hit
            found |= ids or set()
        return found

    def _journal_batches(self, rtype: str, after_seq: int) -> Iterator[list[tuple[str, int, bytes | None]]]:
        conn = self._reads.journal.reader()
        cursor = conn.execute(
            "SELECT id, version, body FROM versions WHERE seq > ? AND rtype=? AND deleted=0", (after_seq, rtype)
        )
        while rows := cursor.fetchmany(_BATCH):
            yield [(str(r[0]), int(r[1]), None if r[2] is None else bytes(r[2])) for r in rows]

    def _write_batch(
        self,
        out: SealedWriter,
        plan: ExportPlan,
        rtype: str,
        rows: list[tuple[str, int, bytes | None]],
        allowed: set[str] | None,
        access: Access | None,
    ) -> int:
        current = self._current(plan, rtype, [r[0] for r in rows if allowed is None or r[0] in allowed], access)
        written = 0
        for rid, version, sealed in rows:
            if current.get(rid) != version or sealed is None:
                continue
            body = self._reads.open_body(rtype, rid, version, sealed)
            decision = plan.decisions.get(rtype)
            if access is not None and decision is not None and decision.masked:
                body = access.present(decision, body)
            out.write(body + b"\n")
            written += 1
        return written

    def _current(self, plan: ExportPlan, rtype: str, ids: list[str], access: Access | None) -> dict[str, int]:
        """id -> current version, of the ids still live, visible to the caller and in the plan's bounds."""
        if not ids:
            return {}
        clause, args = "1=1", list[object]()
        decision = plan.decisions.get(rtype)
        if access is not None and decision is not None:
            clause, args = access.visibility(rtype, decision)
        sql = f"SELECT c.id, c.version, c.patient_key FROM current c WHERE c.rtype=? AND c.deleted=0 AND {clause}"  # noqa: S608 - clauses are ours, values bound
        extra: list[object] = []
        if plan.since_us is not None:
            sql, extra = sql + " AND c.last_updated >= ?", [plan.since_us]
        if plan.level == "patient":
            sql += " AND c.patient_key IS NOT NULL"
        sql += f" AND c.id IN ({','.join('?' * len(ids))})"
        rows = self._reads.journal.reader().execute(sql, (rtype, *args, *extra, *ids)).fetchall()
        members = plan.member_set()
        return {str(r[0]): int(r[1]) for r in rows if members is None or r[2] in members}

    # -- files and status ----------------------------------------------------------------------

    def _key(self, job: str) -> tuple[bytes, Any]:
        if self._keys is None:
            raise ForbiddenError("export unavailable", [Issue("forbidden", "bulk export needs encryption at rest")])
        return self._keys.for_subject(f"export:{job}")

    def _record(self, job: str, rtype: str) -> RecordRef:
        return RecordRef(self._tenant, "Export", f"{job}/{rtype}", 1)

    def _writer(self, job: str, rtype: str) -> SealedWriter:
        key_id, aead = self._key(job)
        return SealedWriter(self._root / job / f"{rtype}.ndjson", aead, key_id, self._record(job, rtype))

    def status(self, job: str, access: Access | None) -> JobStatus:
        """The job of this caller; raises ResourceNotFoundError for an unknown job or another caller's."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, status, created, finished, output, error, progress FROM jobs WHERE id=? AND owner=?",
                (job, owner_of(access)),
            ).fetchone()
        if row is None:
            raise ResourceNotFoundError("export job not found")
        return JobStatus(row[0], row[1], row[2], row[3], orjson.loads(row[4]), row[5], row[6])

    def file(self, job: str, name: str, access: Access | None) -> Iterator[bytes]:
        """The plaintext NDJSON of one output file of the caller's completed job."""
        status = self.status(job, access)
        entry = next((o for o in status.output if o["file"] == name), None)
        if status.status != "completed" or entry is None:
            raise ResourceNotFoundError("export file not found")
        _key_id, aead = self._key(job)
        return read_sealed(self._root / job / name, aead, self._record(job, entry["type"]))

    def delete(self, job: str, access: Access | None) -> None:
        """Cancel or delete the caller's job: its data key is destroyed, then its files."""
        self.status(job, access)
        self._cancelled.add(job)
        if self._keys is not None:
            self._keys.shred(f"export:{job}")
        shutil.rmtree(self._root / job, ignore_errors=True)
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id=?", (job,))

    def _set(self, job: str, **values: object) -> None:
        if job in self._cancelled:
            raise _Cancelled
        names = ", ".join(f"{k}=?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {names} WHERE id=?", (*values.values(), job))  # noqa: S608


class _Cancelled(Exception):
    pass


def _patient_types() -> frozenset[str]:
    from ingest.reads import PATIENT_TYPES

    return PATIENT_TYPES


def _invalid(why: str, code: str) -> InvalidInputError:
    return InvalidInputError("invalid $export request", [Issue(code, why)])


def _now_us() -> int:
    return time.time_ns() // 1000
