"""FHIR Bulk Data export: kick-off (system, Patient, Group), status, files, deletion.

Registered before the generic ``/fhir/{rtype}/{rid}`` routes, which would
otherwise take ``$export`` for a resource type or id.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gateway.auth import access_for
from gateway.errors import outcome
from gateway.fhir import fhir_json, json_response
from ingest.errors import InvalidInputError, Issue
from ingest.transaction import instant

router = APIRouter(prefix="/fhir")


def _base(request: Request) -> str:
    configured = request.app.state.base_url
    return configured or str(request.base_url).rstrip("/") + "/fhir"


@router.get("/$export")
async def export_system(request: Request) -> Response:
    return await _kick_off(request, "system", None)


@router.get("/Patient/$export")
async def export_patients(request: Request) -> Response:
    return await _kick_off(request, "patient", None)


@router.get("/Group/{gid}/$export")
async def export_group(request: Request, gid: str) -> Response:
    return await _kick_off(request, "group", gid)


async def _kick_off(request: Request, level: str, group: str | None) -> Response:
    access = access_for(request)
    if "respond-async" not in request.headers.get("prefer", ""):
        raise InvalidInputError("async required", [Issue("invalid", "$export needs the header Prefer: respond-async")])
    exports = request.app.state.container.exports
    params = list(request.query_params.multi_items())
    plan = await run_in_threadpool(exports.plan, level, params, access, group)
    job = exports.start(plan, access)
    issue = Issue("informational", "export accepted; poll Content-Location", severity="information")
    return fhir_json(outcome([issue]), 202, {"Content-Location": f"{_base(request)}/$export-status/{job}"})


@router.get("/$export-status/{job}")
async def export_status(request: Request, job: str) -> Response:
    access = access_for(request)
    status = await run_in_threadpool(request.app.state.container.exports.status, job, access)
    if status.status == "in-progress":
        return Response(status_code=202, headers={"X-Progress": status.progress or "queued", "Retry-After": "2"})
    if status.status == "failed":
        issue = Issue("exception", f"the export failed: {status.error}", severity="error")
        return fhir_json(outcome([issue]), 500)
    base = _base(request)
    manifest = {
        "transactionTime": instant(status.created_us),
        "request": f"{base}/$export",
        "requiresAccessToken": True,
        "output": [
            {"type": o["type"], "url": f"{base}/$export-file/{job}/{o['file']}", "count": o["count"]}
            for o in status.output
        ],
        "error": [],
    }
    return json_response(manifest, headers={"Expires": "never cached", "Cache-Control": "no-store"})


@router.get("/$export-file/{job}/{name}")
async def export_file(request: Request, job: str, name: str) -> Response:
    access = access_for(request)
    chunks: Iterator[bytes] = await run_in_threadpool(request.app.state.container.exports.file, job, name, access)
    return StreamingResponse(chunks, media_type="application/fhir+ndjson", headers={"Cache-Control": "no-store"})


@router.delete("/$export-status/{job}")
async def export_delete(request: Request, job: str) -> Response:
    access = access_for(request)
    await run_in_threadpool(request.app.state.container.exports.delete, job, access)
    return Response(status_code=202)
