"""The compliance officer's audit page: a static shell (no data) and its data endpoint (audit role only)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gateway.auth import access_for
from gateway.fhir import json_response

router = APIRouter(prefix="/admin")

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_TYPES = {"audit.html": "text/html; charset=utf-8", "audit.js": "text/javascript", "audit.css": "text/css"}


def _static(name: str) -> Response:
    body = resources.files("gateway").joinpath("static", name).read_bytes()
    return Response(body, media_type=_TYPES[name], headers=_SECURITY_HEADERS)


@router.get("/audit")
async def audit_page() -> Response:
    return _static("audit.html")


@router.get("/audit.js")
async def audit_script() -> Response:
    return _static("audit.js")


@router.get("/audit.css")
async def audit_style() -> Response:
    return _static("audit.css")


@router.get("/audit/data")
async def audit_data(request: Request) -> Response:
    """Counts behind the charts; compliance officers only (the token travels in the Authorization header)."""
    access = access_for(request)
    params = list(request.query_params.multi_items())
    summary = await run_in_threadpool(request.app.state.container.audit_queries.summary, access, params)
    return json_response(summary, headers={"Cache-Control": "no-store"})
