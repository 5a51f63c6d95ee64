"""FHIR REST endpoints under /fhir. Each one parses HTTP, calls a use case, renders."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gateway.auth import access_for, flag_headers
from gateway.capability import capability_statement
from gateway.errors import outcome
from gateway.fhir import (
    check_negotiation,
    fhir_json,
    prefer_return,
    prefer_strict,
    raw_json,
    read_body,
)
from gateway.render import bundle_response, page_bundle, resource_headers, searchset
from ingest.access import Access
from ingest.asof import (
    SNAPSHOT_TAG,
    AsOfRunner,
    compartment_as_of_params,
    parse_as_of,
    read_as_of,
    search_as_of_params,
)
from ingest.errors import InvalidInputError, Issue, ResourceNotFoundError
from ingest.fhir_types import is_supported
from ingest.history import everything, history
from ingest.prepare import parse_etag, parse_json
from ingest.service import Outcome
from ingest.view_run import run_view_for, view_of
from ingest.views import ViewRunner

router = APIRouter(prefix="/fhir")
MAX_VIEW_ROWS = 100_000  # larger extracts: `fhirlake views run` or $export


def _base(request: Request) -> str:
    configured = request.app.state.base_url
    return configured or str(request.base_url).rstrip("/") + "/fhir"


def _check_type(rtype: str) -> None:
    if not is_supported(rtype):
        raise ResourceNotFoundError(
            "unknown or unsupported resource type", [Issue("not-supported", "unknown resource type")]
        )


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    check_negotiation(request)
    return fhir_json(capability_statement(_base(request)))


@router.post("")
@router.post("/")
async def transaction_or_batch(request: Request) -> Response:
    check_negotiation(request)
    access = access_for(request, write=True)
    container = request.app.state.container
    raw = await read_body(request, container.settings.limits.max_body_bytes)
    result = await container.service.submit_bundle(raw, request.headers.get("idempotency-key"), access)
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return raw_json(bundle_response(_base(request), result, prefer_return(request)), headers=headers)


@router.post("/ViewDefinition/$run")
async def run_view_definition(request: Request) -> Response:
    """SQL on FHIR v2: run a ViewDefinition over what the caller may see (Parameters.viewResource or the view).

    ``_format`` names the output (json, ndjson, csv, parquet), so FHIR content negotiation does not apply.
    """
    access = access_for(request)
    container = request.app.state.container
    raw = await read_body(request, container.settings.limits.max_body_bytes)
    view, scalars = view_of(parse_json(raw))
    fmt = request.query_params.get("_format") or scalars.get("_format") or "json"
    limit = request.query_params.get("_limit") or scalars.get("_limit") or str(MAX_VIEW_ROWS)
    if not limit.isdigit():
        raise InvalidInputError("invalid _limit", [Issue("invalid", "_limit must be a positive integer", ("_limit",))])
    runner = ViewRunner(container.journal, container.catalog, container.sealer)
    body, media = await run_in_threadpool(
        run_view_for, runner, view, fmt.removeprefix("application/"), min(int(limit), MAX_VIEW_ROWS), access
    )
    return Response(body, media_type=media, headers={"Cache-Control": "no-store"} | flag_headers(access))


@router.post("/Patient/{rid}/$purge")
async def purge_patient(request: Request, rid: str) -> Response:
    """Erase a patient by destroying the patient's data key (crypto-shredding)."""
    check_negotiation(request)
    access = access_for(request)
    access.require_kind("erasure", "execute")
    report = await request.app.state.container.erasure.erase_async(rid)
    text = f"patient erased: data key destroyed, {report.resources} resources retired"
    issues = [Issue("informational", text, severity="information")]
    if report.copies_missing:
        issues.append(
            Issue("incomplete", f"{len(report.copies_missing)} key store copies were not reachable", severity="warning")
        )
    return fhir_json(outcome(issues))


@router.get("/AuditEvent")
async def audit_events(request: Request) -> Response:
    """The audit trail as AuditEvents, for compliance officers only (patient, agent, date)."""
    check_negotiation(request)
    access = access_for(request)
    params = list(request.query_params.multi_items())
    bundle = await run_in_threadpool(request.app.state.container.audit_queries.search, access, params)
    return fhir_json(bundle)


@router.get("/{rtype}")
async def search(request: Request, rtype: str) -> Response:
    check_negotiation(request)
    _check_type(rtype)
    access = access_for(request)
    container = request.app.state.container
    params = list(request.query_params.multi_items())
    if "_asOf" in request.query_params:
        return await _as_of_bundle(request, access, search_as_of_params, rtype, params)
    result = await run_in_threadpool(
        container.reads.search,
        rtype,
        params,
        strict=prefer_strict(request),
        max_count=container.settings.limits.max_count,
        access=access,
    )
    return fhir_json(searchset(_base(request), result, rtype), headers=flag_headers(access))


@router.post("/{rtype}")
async def create(request: Request, rtype: str) -> Response:
    check_negotiation(request)
    _check_type(rtype)
    access = access_for(request, write=True)
    container = request.app.state.container
    raw = await read_body(request, container.settings.limits.max_body_bytes)
    result = await container.service.interact(
        "POST",
        rtype,
        None,
        raw,
        if_none_exist=request.headers.get("if-none-exist"),
        idempotency_key=request.headers.get("idempotency-key"),
        access=access,
    )
    return _written(request, result)


@router.put("/{rtype}")
@router.put("/{rtype}/{rid}")
async def update(request: Request, rtype: str, rid: str | None = None) -> Response:
    check_negotiation(request)
    _check_type(rtype)
    access = access_for(request, write=True)
    container = request.app.state.container
    raw = await read_body(request, container.settings.limits.max_body_bytes)
    if_match = request.headers.get("if-match")
    result = await container.service.interact(
        "PUT",
        rtype,
        rid,
        raw,
        query=None if rid else (request.url.query or None),
        if_match=parse_etag(if_match) if if_match else None,
        idempotency_key=request.headers.get("idempotency-key"),
        access=access,
    )
    return _written(request, result)


@router.delete("/{rtype}")
@router.delete("/{rtype}/{rid}")
async def delete(request: Request, rtype: str, rid: str | None = None) -> Response:
    check_negotiation(request)
    _check_type(rtype)
    access = access_for(request, write=True)
    if_match = request.headers.get("if-match")
    written = await request.app.state.container.service.interact(
        "DELETE",
        rtype,
        rid,
        None,
        query=None if rid else (request.url.query or None),
        if_match=parse_etag(if_match) if if_match else None,
        access=access,
    )
    headers = resource_headers(_base(request), written.writes[0], with_location=False)
    if prefer_return(request) == "OperationOutcome":
        return fhir_json(outcome([Issue("informational", "deleted", severity="information")]), headers=headers)
    return Response(status_code=204, headers=headers)


@router.get("/Patient/{rid}/$everything")
async def patient_everything(request: Request, rid: str) -> Response:
    check_negotiation(request)
    access = access_for(request)
    container = request.app.state.container
    params = list(request.query_params.multi_items())
    if "_asOf" in request.query_params:
        return await _as_of_bundle(request, access, compartment_as_of_params, rid, params)
    page = await run_in_threadpool(
        everything, container.reads, rid, params, max_count=container.settings.limits.max_count, access=access
    )
    return fhir_json(
        page_bundle(_base(request), page, f"Patient/{rid}/$everything", "searchset"), headers=flag_headers(access)
    )


async def _as_of_bundle(
    request: Request, access: Access, run: AsOfRunner, target: str, params: list[tuple[str, str]]
) -> Response:
    container = request.app.state.container
    max_count = container.settings.limits.max_count
    found, page = await run_in_threadpool(run, container.reads, target, params, max_count, access)
    path = f"Patient/{target}/$everything" if run is compartment_as_of_params else target
    bundle = page_bundle(_base(request), page, path, "searchset")
    bundle["meta"] = {"tag": [{"system": SNAPSHOT_TAG, "code": s.label()} for s in found.snapshots]}
    return fhir_json(bundle, headers=flag_headers(access) | {"Fhirlake-Snapshot": found.header()})


@router.get("/{rtype}/_history")
async def type_history(request: Request, rtype: str) -> Response:
    return await _history(request, rtype, None)


@router.get("/{rtype}/{rid}/_history")
async def instance_history(request: Request, rtype: str, rid: str) -> Response:
    return await _history(request, rtype, rid)


async def _history(request: Request, rtype: str, rid: str | None) -> Response:
    check_negotiation(request)
    _check_type(rtype)
    access = access_for(request)
    container = request.app.state.container
    params = list(request.query_params.multi_items())
    page = await run_in_threadpool(
        history, container.reads, rtype, rid, params, max_count=container.settings.limits.max_count, access=access
    )
    path = f"{rtype}/{rid}/_history" if rid else f"{rtype}/_history"
    return fhir_json(page_bundle(_base(request), page, path, "history"), headers=flag_headers(access))


@router.get("/{rtype}/{rid}")
async def read(request: Request, rtype: str, rid: str) -> Response:
    check_negotiation(request)
    _check_type(rtype)
    access = access_for(request)
    reads = request.app.state.container.reads
    if "_asOf" in request.query_params:
        at = parse_as_of(request.query_params["_asOf"])
        found = await run_in_threadpool(read_as_of, reads, rtype, rid, at, access)
        res = found.resources[0]
        assert res.body is not None
        headers = resource_headers(_base(request), res, with_location=False) | flag_headers(access)
        return raw_json(res.body, headers=headers | {"Fhirlake-Snapshot": found.header()})
    stored = await run_in_threadpool(reads.read, rtype, rid, access)
    assert stored.body is not None
    headers = resource_headers(_base(request), stored, with_location=False) | flag_headers(access)
    return raw_json(stored.body, headers=headers)


@router.get("/{rtype}/{rid}/_history/{vid}")
async def vread(request: Request, rtype: str, rid: str, vid: str) -> Response:
    check_negotiation(request)
    _check_type(rtype)
    access = access_for(request)
    if not vid.isdigit():
        raise ResourceNotFoundError("version not found")
    stored = await run_in_threadpool(request.app.state.container.reads.vread, rtype, rid, int(vid), access)
    assert stored.body is not None
    headers = resource_headers(_base(request), stored, with_location=False) | flag_headers(access)
    return raw_json(stored.body, headers=headers)


def _written(request: Request, written: Outcome) -> Response:
    result = written.writes[0]
    headers = resource_headers(_base(request), result, with_location=True)
    if written.replayed:
        headers["Idempotent-Replayed"] = "true"
    prefer = prefer_return(request)
    if prefer == "minimal" or result.body is None:
        return Response(status_code=result.status, headers=headers)
    if prefer == "OperationOutcome":
        return fhir_json(outcome([Issue("informational", "ok", severity="information")]), result.status, headers)
    return raw_json(result.body, result.status, headers)
