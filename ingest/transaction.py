"""Apply a prepared transaction or batch inside a journal write job.

This is the ordered half of ingestion: it sees the current state (versions,
identifier tokens), resolves conditional operations and references, assigns
versions and ``meta``, and writes version rows. A transaction either writes all
its rows or raises (the journal rolls its savepoint back); a batch writes each
entry in its own nested savepoint.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from ingest import conditional
from ingest.errors import (
    ConflictError,
    IngestError,
    InvalidInputError,
    Issue,
    PreconditionFailedError,
    ResourceGoneError,
    ResourceNotFoundError,
    entry_issue,
    error_from_code,
)
from ingest.journal import WriteContext
from ingest.prepare import reference_element
from ingest.prepared import PreparedBundle, PreparedEntry
from lake.rows import pack_fields
from security.errors import KeyShreddedError
from security.keys import patient_subject
from security.pseudonym import Pseudonymizer
from security.sealing import BODY_PATH, RowSealer

ACCESS_TYPES = frozenset({"Patient", "CareTeam"})  # resources that say who cares for a patient


@dataclass(slots=True)
class EntryResult:
    index: int
    status: int
    resource_type: str = ""
    resource_id: str | None = None
    version: int | None = None
    last_updated_us: int | None = None
    body: bytes | None = None  # final JSON of the written (or matched) resource
    error: IngestError | None = None


@dataclass(slots=True)
class Applied:
    results: list[EntryResult]
    seq: int | None = None
    replayed: bool = False  # an idempotent retry answered from the stored outcome
    written: int = 0


def _summary(results: list[EntryResult]) -> bytes:
    return orjson.dumps(
        [
            {
                "i": r.index,
                "s": r.status,
                "t": r.resource_type,
                "id": r.resource_id,
                "v": r.version,
                "u": r.last_updated_us,
                "e": None if r.error is None else [r.error.code, [i.as_fhir() for i in r.error.issues]],
            }
            for r in results
        ]
    )


def _replay(stored: bytes) -> list[EntryResult]:
    out = []
    for item in orjson.loads(stored):
        error = None
        if item["e"] is not None:
            code, issues = item["e"]
            error = error_from_code(
                code, [Issue(i["code"], i.get("diagnostics", ""), tuple(i.get("expression", ()))) for i in issues]
            )
        out.append(EntryResult(item["i"], item["s"], item["t"], item["id"], item["v"], item["u"], None, error))
    return out


def _check_reads(ctx: WriteContext, bundle: PreparedBundle) -> None:
    """A transaction fails as a whole when one of its reads fails (the reads themselves run after commit)."""
    for entry in bundle.entries:
        if entry.method != "GET" or entry.resource_id is None:
            continue
        cur = ctx.current(entry.resource_type, entry.resource_id)
        version = entry.version_id if entry.version_id is not None else (cur.version if cur else None)
        row = ctx.conn.execute(
            "SELECT deleted FROM versions WHERE rtype=? AND id=? AND version=?",
            (entry.resource_type, entry.resource_id, version),
        ).fetchone()
        if row is None:
            issue = entry_issue(entry.index, "request.url", "not-found", "the resource to read does not exist")
            raise ResourceNotFoundError("resource not found", [issue])
        if row[0]:
            raise ResourceGoneError(
                "resource deleted",
                [entry_issue(entry.index, "request.url", "deleted", "the resource to read was deleted")],
            )


@dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    request_hash: str


@dataclass(slots=True)
class _Plan:
    remap: dict[str, str] = field(default_factory=dict)  # tentative id -> existing id
    refs: dict[bytes, bytes] = field(default_factory=dict)  # conditional reference -> literal
    skip: dict[int, EntryResult] = field(default_factory=dict)  # entries answered without a write
    tokens: tuple[bytes, bytes] = (b"", b"")  # meta placeholders (versionId, lastUpdated)


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)


@lru_cache(maxsize=1024)  # one stamp per transaction, used by every entry
def instant(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def request_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class TransactionApplier:
    def __init__(self, pseudo: Pseudonymizer, sealer: RowSealer) -> None:
        self._pseudo = pseudo
        self._sealer = sealer

    def prepare_keys(self, bundle: PreparedBundle) -> None:
        """Create or unwrap the data keys the bundle's writes will need, outside the journal writer.

        Raises KmsUnavailableError; a shredded patient fails later, in its own entry.
        """
        subjects = set()
        for entry in bundle.entries:
            if entry.method in ("POST", "PUT") and entry.error is None:
                patient = entry.patient_id
                known = patient is not None and not patient.startswith("Patient?")
                subjects.add(patient_subject(self._pseudo.patient_key(patient) if known else None))  # type: ignore[arg-type]
        for subject in subjects:
            with contextlib.suppress(KeyShreddedError):
                self._sealer.prepare((subject,))

    def apply(self, ctx: WriteContext, bundle: PreparedBundle, idem: Idempotency | None) -> Applied:
        """Write ``bundle``; raises IngestError (rolled back) when a transaction cannot be applied."""
        if idem is not None:
            stored = ctx.idempotent_response(idem.key)
            if stored is not None:
                if stored[0] != idem.request_hash:
                    raise ConflictError("The idempotency key was used with a different request")
                return Applied(results=_replay(stored[2]), replayed=True)
        stamp = now_us()
        writes = [e for e in bundle.entries if e.method != "GET" and e.error is None]
        if bundle.bundle_type == "transaction":
            results = self._apply_atomic(ctx, bundle, writes, stamp)
            _check_reads(ctx, bundle)
        else:
            results = self._apply_each(ctx, bundle, writes, stamp)
        written = ctx.rows_written
        seq = ctx.allocate_seq(written, stamp) if written else None
        if idem is not None:
            ctx.remember_response(idem.key, idem.request_hash, 200, _summary(results), stamp)
        return Applied(results=results, seq=seq, written=written)

    def _apply_atomic(
        self, ctx: WriteContext, bundle: PreparedBundle, writes: list[PreparedEntry], stamp: int
    ) -> list[EntryResult]:
        at = (lambda e: None) if bundle.single else (lambda e: e.index)
        plan = self._resolve(ctx, writes, at, bundle)
        seen: set[tuple[str, str]] = set()
        for entry in writes:
            target = (entry.resource_type, str(entry.resource_id))
            if entry.index not in plan.skip and entry.method in ("PUT", "DELETE"):
                if target in seen:
                    raise InvalidInputError(
                        "resource changed twice",
                        [entry_issue(at(entry), "request.url", "duplicate", "the same resource is changed twice")],
                    )
                seen.add(target)
        return [plan.skip.get(e.index) or self._write(ctx, e, plan, stamp, at(e)) for e in writes]

    def _apply_each(
        self, ctx: WriteContext, bundle: PreparedBundle, writes: list[PreparedEntry], stamp: int
    ) -> list[EntryResult]:
        results = []
        for entry in writes:
            ctx.conn.execute("SAVEPOINT entry")
            staged = ctx.rows_written
            try:
                plan = self._resolve(ctx, [entry], lambda e: e.index, bundle)
                result = plan.skip.get(entry.index) or self._write(ctx, entry, plan, stamp, entry.index)
                ctx.flush()
            except IngestError as exc:
                ctx.discard()
                ctx.rows_written = staged
                ctx.conn.execute("ROLLBACK TO entry")
                result = EntryResult(index=entry.index, status=0, error=exc)
            ctx.conn.execute("RELEASE entry")
            results.append(result)
        return results

    def _resolve(self, ctx: WriteContext, writes: list[PreparedEntry], at: Any, bundle: PreparedBundle) -> _Plan:
        plan = _Plan(tokens=(b'"' + bundle.version_token + b'"', b'"' + bundle.updated_token + b'"'))
        created: dict[str, set[str]] = {}
        for entry in writes:
            if entry.method in ("POST", "PUT") and entry.conditional is None and entry.resource_id:
                for token in conditional.identifier_tokens(self._pseudo, entry.resource_type, entry.identifiers):
                    created.setdefault(token, set()).add(entry.resource_id)
        for entry in writes:
            if entry.conditional is not None:
                self._resolve_conditional(ctx, entry, plan, at(entry))
        for entry in writes:
            for ref in entry.cond_refs:
                key = orjson.dumps(ref)
                if key not in plan.refs:
                    plan.refs[key] = orjson.dumps(self._resolve_reference(ctx, ref, created, entry, at(entry)))
        return plan

    def _match(self, ctx: WriteContext, rtype: str, query: str, at: int | None, extra: Any = None) -> list[str]:
        def exists(rid: str) -> bool:
            cur = ctx.current(rtype, rid)
            return cur is not None and not cur.deleted

        return conditional.match(self._pseudo, rtype, query, ctx.ids_by_token, at, exists, extra)

    def _resolve_conditional(self, ctx: WriteContext, entry: PreparedEntry, plan: _Plan, at: int | None) -> None:
        assert entry.conditional is not None
        ids = self._match(ctx, entry.resource_type, entry.conditional, at)
        if len(ids) > 1:
            raise PreconditionFailedError(
                "several matches",
                [entry_issue(at, "request", "multiple-matches", "the conditional criteria match several resources")],
            )
        if entry.method == "POST" and ids:
            plan.skip[entry.index] = self._existing(ctx, entry, ids[0])
            plan.remap[str(entry.resource_id)] = ids[0]
        elif entry.method == "PUT":
            self._resolve_conditional_update(entry, ids, plan, at)
        elif entry.method == "DELETE":
            if ids:
                entry.resource_id = ids[0]
            else:
                plan.skip[entry.index] = EntryResult(index=entry.index, status=204, resource_type=entry.resource_type)

    @staticmethod
    def _resolve_conditional_update(entry: PreparedEntry, ids: list[str], plan: _Plan, at: int | None) -> None:
        """One match: update it (a different id in the body is 400); none: create, with the body's id if given."""
        target = ids[0] if ids else entry.body_id
        if ids and entry.body_id is not None and entry.body_id != ids[0]:
            raise InvalidInputError(
                "id mismatch",
                [
                    entry_issue(
                        at,
                        "resource.id" if at is not None else f"{entry.resource_type}.id",
                        "invalid",
                        "the resource id differs from the resource that matched",
                    )
                ],
            )
        if target is not None:
            plan.remap[str(entry.resource_id)] = target
            entry.resource_id = target

    def _existing(self, ctx: WriteContext, entry: PreparedEntry, rid: str) -> EntryResult:
        cur = ctx.current(entry.resource_type, rid)
        assert cur is not None
        row = ctx.conn.execute(
            "SELECT body FROM versions WHERE rtype=? AND id=? AND version=?", (entry.resource_type, rid, cur.version)
        ).fetchone()
        body = self._sealer.open(entry.resource_type, rid, cur.version, BODY_PATH, row[0]) if row and row[0] else None
        return EntryResult(entry.index, 200, entry.resource_type, rid, cur.version, cur.last_updated, body)

    def _resolve_reference(
        self, ctx: WriteContext, ref: str, created: dict[str, set[str]], entry: PreparedEntry, at: int | None
    ) -> str:
        rtype, _, query = ref.partition("?")
        ids = self._match(ctx, rtype, query, at, created)
        if len(ids) != 1:
            why = "matches no resource" if not ids else "matches several resources"
            assert entry.body is not None
            where = reference_element(entry.body, entry.resource_type, ref, at)
            code = "not-found" if not ids else "multiple-matches"
            raise InvalidInputError(
                "unresolvable conditional reference", [entry_issue(at, where, code, f"a conditional reference {why}")]
            )
        return f"{rtype}/{ids[0]}"

    def _write(self, ctx: WriteContext, entry: PreparedEntry, plan: _Plan, stamp: int, at: int | None) -> EntryResult:
        rtype, rid = entry.resource_type, str(entry.resource_id)
        # A POST that reaches this point creates under a fresh UUID: nothing to look up.
        cur = None if entry.method == "POST" else ctx.current(rtype, rid)
        if entry.if_match is not None and (cur is None or cur.deleted or cur.version != entry.if_match):
            raise PreconditionFailedError(
                "version conflict",
                [entry_issue(at, "request.ifMatch", "conflict", "the resource is not at the expected version")],
            )
        if entry.method == "DELETE":
            if cur is None or cur.deleted:
                return EntryResult(entry.index, 204, rtype, rid)
            version = cur.version + 1
            row = (rtype, rid, version, ctx.pending_seq, stamp, 1, cur.patient_key, *([None] * 6), None, None)
            ctx.write_versions([row])
            ctx.replace_tokens(rtype, rid, ())
            if rtype in ACCESS_TYPES:
                ctx.replace_access(rtype, rid, None, ())
            return EntryResult(entry.index, 204, rtype, rid, version, stamp)
        version = 1 if cur is None else cur.version + 1
        body = self._finish_body(entry, plan, version, stamp)
        patient_id = self._patient_of(entry, plan)
        patient_key = self._pseudo.patient_key(patient_id) if patient_id else None
        cols = entry.columns  # status, code_system, code, effective_year, value_num, value_unit
        assert cols is not None
        fields = [(BODY_PATH, body), *((path, _rewrite(value, plan)) for path, value in entry.phi)]
        try:
            sealed = self._sealer.seal(patient_subject(patient_key), rtype, rid, version, fields)
        except KeyShreddedError:
            raise ResourceGoneError(
                "patient erased", [entry_issue(at, "resource", "deleted", "the patient of this resource was erased")]
            ) from None
        phi = pack_fields([(path, value) for (path, _), value in zip(fields[1:], sealed[1:], strict=True)])
        ctx.write_versions([(rtype, rid, version, ctx.pending_seq, stamp, 0, patient_key, *cols, sealed[0], phi)])
        tokens = conditional.identifier_tokens(self._pseudo, rtype, entry.identifiers)
        tokens.update(self._pseudo.token(rtype, param, value) for param, value in entry.search)
        ctx.replace_tokens(rtype, rid, tokens, fresh=cur is None)
        ctx.set_category(rtype, rid, entry.category)
        if rtype in ACCESS_TYPES:
            ctx.replace_access(rtype, rid, patient_key, entry.access)
        status = 201 if cur is None or cur.deleted else 200
        return EntryResult(entry.index, status, rtype, rid, version, stamp, body)

    @staticmethod
    def _patient_of(entry: PreparedEntry, plan: _Plan) -> str | None:
        patient = entry.patient_id
        if patient is not None and patient.startswith("Patient?"):
            literal = plan.refs.get(orjson.dumps(patient))
            return None if literal is None else str(orjson.loads(literal)).split("/", 1)[1]
        return plan.remap.get(patient or "", patient)

    def _finish_body(self, entry: PreparedEntry, plan: _Plan, version: int, stamp: int) -> bytes:
        assert entry.body is not None
        body = _rewrite(entry.body, plan)
        body = body.replace(plan.tokens[0], orjson.dumps(str(version)), 1)
        return body.replace(plan.tokens[1], orjson.dumps(instant(stamp)), 1)


def _rewrite(data: bytes, plan: _Plan) -> bytes:
    """Apply the ids and references the transaction resolved."""
    for tentative, real in plan.remap.items():
        if tentative.encode() in data:
            data = data.replace(tentative.encode(), real.encode())
    for ref, literal in plan.refs.items():
        data = data.replace(ref, literal)
    return data
