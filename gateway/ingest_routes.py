"""EMR entry points: ``POST /ingest/{adapter}``, ``$import``, ``Patient/$match`` and the dead-letter API.

Thin like every router: parse HTTP, authorize, call ``ingest.emr_ingest`` /
``ingest.bulk_import``, render. HL7 v2 senders get their ACK or NACK as the body.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gateway.auth import access_for
from gateway.errors import outcome, status_of
from gateway.fhir import check_negotiation, fhir_json, json_response
from gateway.render import bundle_response
from ingest.emr_ingest import EmrIngest, EmrResult
from ingest.errors import (
    InvalidInputError,
    Issue,
    PayloadTooLargeError,
    ResourceNotFoundError,
    UnsupportedMediaTypeError,
)

router = APIRouter()

_MEDIA = frozenset(
    {
        "application/fhir+json",
        "application/json",
        "application/json+fhir",
        "application/fhir+ndjson",
        "application/x-ndjson",
        "application/ndjson",
        "x-application/hl7-v2+er7",
        "application/hl7-v2",
        "application/hl7-v2+er7",
        "text/plain",
    }
)


def _emr(request: Request) -> EmrIngest:
    emr: EmrIngest = request.app.state.container.emr
    return emr


def _base(request: Request) -> str:
    configured = request.app.state.base_url
    return configured or str(request.base_url).rstrip("/") + "/fhir"


async def _payload(request: Request) -> tuple[bytes, str | None]:
    ctype = request.headers.get("content-type")
    media = ctype.split(";")[0].strip().lower() if ctype else None
    if media is not None and media not in _MEDIA:
        raise UnsupportedMediaTypeError("the body must be FHIR JSON, NDJSON or HL7 v2 ER7")
    limit = request.app.state.container.settings.limits.max_body_bytes
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise InvalidInputError("empty body", [Issue("required", "the request body is empty")])
    return body, media


@router.post("/ingest/{adapter}")
async def ingest_payload(request: Request, adapter: str) -> Response:
    """One EMR payload through its adapter; stored, or kept as a dead letter with the reason."""
    access = access_for(request, write=True)
    payload, media = await _payload(request)
    result = await _emr(request).receive(adapter, payload, media, access)
    headers = {"X-Payload-Sha256": result.sha}
    if result.dead_letter is not None:
        headers["X-Dead-Letter"] = str(result.dead_letter)
    if result.reply is not None:
        body, reply_type = result.reply
        status = 200 if result.error is None else status_of(result.error)
        return Response(body, status_code=status, media_type=reply_type, headers=headers)
    if result.error is not None:
        issues = [
            *result.error.issues,
            Issue("informational", "the payload is kept as a dead letter", severity="information"),
        ]
        return fhir_json(outcome(issues), status_of(result.error), headers)
    return Response(
        _response_bundle(request, result), media_type="application/fhir+json; charset=utf-8", headers=headers
    )


def _response_bundle(request: Request, result: EmrResult) -> bytes:
    assert result.outcome is not None
    raw = bundle_response(_base(request), result.outcome, "minimal")
    if not result.warnings:
        return raw
    doc: dict[str, Any] = orjson.loads(raw)
    warnings = [Issue("informational", w, severity="warning") for w in result.warnings[:100]]
    if doc.get("entry"):
        doc["entry"][-1].setdefault("response", {})["outcome"] = outcome(warnings)
    return orjson.dumps(doc)


@router.post("/fhir/$import")
async def bulk_import(request: Request) -> Response:
    """FHIR bulk import of NDJSON files under ``<data-dir>/import`` (``file:`` URLs or relative paths)."""
    check_negotiation(request)
    access = access_for(request, write=True)
    try:
        params = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidInputError("the body is not JSON") from None
    container = request.app.state.container
    report = await container.emr.bulk.run_parameters(params, access)
    return fhir_json(report.as_outcome())


@router.post("/fhir/Patient/$match")
async def patient_match(request: Request) -> Response:
    """Candidate patients for a Patient resource, scored (enterprise patient index)."""
    check_negotiation(request)
    access = access_for(request)
    access.require_type("search", "Patient")
    try:
        params = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidInputError("the body is not JSON") from None
    bundle = await run_in_threadpool(_match_bundle, request, params, access)
    return fhir_json(bundle)


def _match_bundle(request: Request, params: Any, access: Any) -> dict[str, Any]:
    from ingest.empi_match import match_bundle

    container = request.app.state.container
    return match_bundle(params, container.emr.index, container.reads, access, _base(request))


@router.get("/ingest/dead-letters")
async def dead_letters(request: Request) -> Response:
    """Payloads that could not be stored, with their reasons (operators only)."""
    access = access_for(request)
    access.require_kind("admin", "execute")
    status = request.query_params.get("status", "open")
    letters = await run_in_threadpool(_emr(request).raw.letters, None if status == "all" else status)
    return json_response(
        {"deadLetters": [letter.as_json() for letter in letters]}, headers={"Cache-Control": "no-store"}
    )


@router.post("/ingest/dead-letters/{letter_id}/$retry")
async def retry_dead_letter(request: Request, letter_id: str) -> Response:
    """Process a dead letter again with the current mapping (operators only)."""
    access = access_for(request)
    access.require_kind("admin", "execute")
    if not letter_id.isdigit():
        raise ResourceNotFoundError("dead letter not found")
    result = await _emr(request).retry(int(letter_id), None)
    doc: dict[str, Any] = {"id": int(letter_id), "stored": result.error is None, "warnings": result.warnings}
    if result.error is not None:
        doc["reason"] = [i.as_fhir() for i in result.error.issues]
    return json_response(doc)
