"""The ingest use cases: accept bundles and REST writes durably and idempotently."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from opentelemetry import trace
from starlette.concurrency import run_in_threadpool

from ingest.access import Access
from ingest.errors import ConflictError, ForbiddenError, IngestError, entry_issue
from ingest.journal import Journal
from ingest.prepare import strip_type
from ingest.prepared import PreparedBundle, PreparedEntry
from ingest.reads import ResourceReads, SearchResult, StoredResource
from ingest.transaction import EntryResult, Idempotency, TransactionApplier, request_hash
from ingest.validation import Validator
from telemetry.metrics import INGEST_RESOURCES

_tracer = trace.get_tracer("fhirlake.ingest")


@dataclass(slots=True)
class ReadResult:
    index: int
    resource: StoredResource | None = None
    search: SearchResult | None = None
    error: IngestError | None = None


@dataclass(slots=True)
class Outcome:
    bundle_type: str  # transaction, batch or interaction
    writes: list[EntryResult] = field(default_factory=list)
    reads: list[ReadResult] = field(default_factory=list)
    replayed: bool = False
    resources: int = 0


class IngestService:
    def __init__(
        self, journal: Journal, validator: Validator, applier: TransactionApplier, reads: ResourceReads, max_count: int
    ) -> None:
        self._journal = journal
        self._validator = validator
        self._applier = applier
        self._reads = reads
        self._max_count = max_count

    async def submit_bundle(self, raw: bytes, idempotency_key: str | None, access: Access | None = None) -> Outcome:
        """Process a transaction or batch Bundle (raises IngestError for a rejected transaction).

        With ``access``, every entry is authorized on its own: a denied entry fails a
        transaction as a whole (403) and fails alone in a batch.
        """
        digest = request_hash(raw)
        await self._reject_reused_key(idempotency_key, digest)
        prepared = await self._validator.bundle(raw)
        if access is not None:
            _authorize_entries(prepared, access)
        key = _key(idempotency_key, prepared)
        return await self._apply(prepared, None if key is None else Idempotency(key, digest), access)

    async def interact(
        self,
        method: str,
        resource_type: str,
        resource_id: str | None,
        raw: bytes | None,
        *,
        query: str | None = None,
        if_match: int | None = None,
        if_none_exist: str | None = None,
        idempotency_key: str | None = None,
        access: Access | None = None,
    ) -> Outcome:
        """A REST create, update or delete; its outcome holds the single entry result (raises its error)."""
        digest = request_hash(
            b"%s %s/%s?%s\n" % (method.encode(), resource_type.encode(), str(resource_id).encode(), str(query).encode())
            + (raw or b"")
        )
        await self._reject_reused_key(idempotency_key, digest)
        prepared = await self._validator.interaction(raw, method, resource_type, resource_id, query)
        if access is not None:
            _authorize_entries(prepared, access)
        entry = prepared.entries[0]
        if if_match is not None:
            entry.if_match = if_match
        if if_none_exist:
            entry.conditional = strip_type(if_none_exist, resource_type)
        key = None if idempotency_key is None else f"h:{_hash(idempotency_key)}"
        outcome = await self._apply(prepared, None if key is None else Idempotency(key, digest))
        result = outcome.writes[0]
        if result.error is not None:
            raise result.error
        return outcome

    async def _reject_reused_key(self, idempotency_key: str | None, digest: str) -> None:
        """409 before validating when a header key already stands for a different request.

        A matching retry is replayed by the journal job itself, from the record in its group.
        """
        if idempotency_key is None:
            return
        stored = await run_in_threadpool(self._journal.idempotent_response, f"h:{_hash(idempotency_key)}")
        if stored is not None and stored[0] != digest:
            raise ConflictError("The idempotency key was used with a different request")

    async def _apply(self, prepared: PreparedBundle, idem: Idempotency | None, access: Access | None = None) -> Outcome:
        if any(e.method in ("POST", "PUT") for e in prepared.entries):
            # Key creation and unwrapping (KMS calls, key store fsyncs) stay off the journal writer.
            with _tracer.start_as_current_span("keys.prepare"):  # data keys: KMS and key store
                await run_in_threadpool(self._applier.prepare_keys, prepared)
        with _tracer.start_as_current_span("journal.commit") as span:  # sealing, apply, group commit (fsync)
            span.set_attribute("fhirlake.entries", len(prepared.entries))
            future = self._journal.submit(lambda ctx: self._applier.apply(ctx, prepared, idem))
            applied = await asyncio.wrap_future(future)
        if applied.replayed:
            await run_in_threadpool(self._restore_bodies, applied.results)
        else:
            INGEST_RESOURCES.inc(applied.written)
        outcome = Outcome(
            bundle_type="interaction" if prepared.single else prepared.bundle_type,
            writes=applied.results,
            replayed=applied.replayed,
            resources=applied.written,
        )
        gets = [e for e in prepared.entries if e.method == "GET" and e.error is None]
        if gets:
            outcome.reads = await run_in_threadpool(lambda: [self._get(e, access) for e in gets])
        for entry in prepared.entries:
            if entry.error is not None:
                outcome.writes.append(EntryResult(entry.index, 0, entry.resource_type, error=entry.error))
        return outcome

    def _restore_bodies(self, results: list[EntryResult]) -> None:
        """A replay answers with the versions written the first time (the summary keeps no bodies)."""
        for result in results:
            if result.error is None and result.version is not None and result.status in (200, 201):
                result.body = self._reads.vread(result.resource_type, str(result.resource_id), result.version).body

    def _get(self, entry: PreparedEntry, access: Access | None) -> ReadResult:
        rtype = entry.resource_type
        try:
            if entry.resource_id is None:
                params = _parse_query(entry.query or "")
                result = self._reads.search(rtype, params, strict=False, max_count=self._max_count, access=access)
                return ReadResult(entry.index, search=result)
            if entry.version_id is not None:
                return ReadResult(entry.index, self._reads.vread(rtype, entry.resource_id, entry.version_id, access))
            return ReadResult(entry.index, self._reads.read(rtype, entry.resource_id, access))
        except IngestError as exc:
            return ReadResult(entry.index, error=exc)


_WRITE_ACTION = {"POST": "create", "PUT": "update", "DELETE": "delete"}


def _authorize_entries(prepared: PreparedBundle, access: Access) -> None:
    """Authorize each write entry (reads are authorized, and filtered, when they run)."""
    denied = []
    for entry in prepared.entries:
        if entry.error is not None or entry.method == "GET":
            continue
        if not access.decide(_WRITE_ACTION[entry.method], entry.resource_type, None).allowed:
            access.denied = True
            at = None if prepared.single else entry.index
            issue = entry_issue(at, "request", "forbidden", f"not permitted to write {entry.resource_type} resources")
            error = ForbiddenError("forbidden", [issue])
            if prepared.bundle_type == "batch" and not prepared.single:
                entry.error = error
            else:
                denied.append(issue)
    if denied:
        raise ForbiddenError("forbidden", denied[:100])


def _parse_query(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _key(header: str | None, prepared: PreparedBundle) -> str | None:
    if header is not None:
        return f"h:{_hash(header)}"
    if prepared.identifier is not None:
        system, value = prepared.identifier
        return f"b:{_hash(system + '|' + value)}"
    return None
