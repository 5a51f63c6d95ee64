"""FHIR JSON on the wire: media types, body limits, rendering."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from ingest.errors import NotAcceptableError, PayloadTooLargeError, UnsupportedMediaTypeError

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_ACCEPTABLE = (*_JSON_TYPES, "*/*", "application/*")
_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})


def fhir_json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=f"{FHIR_JSON}; charset=utf-8", headers=headers)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Plain JSON (OAuth2 and SMART discovery documents are not FHIR resources)."""
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


def raw_json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=f"{FHIR_JSON}; charset=utf-8", headers=headers)


def check_negotiation(request: Request) -> None:
    """Reject requests that ask for something other than FHIR JSON (406)."""
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt not in _FORMATS:
        raise NotAcceptableError("only JSON is supported (_format)")
    accept = request.headers.get("accept")
    if accept and not any(t.split(";")[0].strip() in _ACCEPTABLE for t in accept.split(",")):
        raise NotAcceptableError("only application/fhir+json is supported")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body as bytes; 415 for non-JSON media types, 413 past ``limit``."""
    ctype = request.headers.get("content-type")
    if ctype is not None and ctype.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise UnsupportedMediaTypeError("the body must be application/fhir+json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _prefer(request: Request) -> dict[str, str]:
    """The ``Prefer`` preferences (RFC 7240: comma-separated; ``;`` is also accepted)."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.replace(";", ",").split(","):
            name, _, value = part.strip().partition("=")
            out.setdefault(name.strip().lower(), value.strip().strip('"'))
    return out


def prefer_return(request: Request) -> str:
    """``minimal``, ``representation`` (default) or ``OperationOutcome``."""
    value = _prefer(request).get("return", "")
    return value if value in ("minimal", "representation", "OperationOutcome") else "representation"


def prefer_strict(request: Request) -> bool:
    return _prefer(request).get("handling") == "strict"
