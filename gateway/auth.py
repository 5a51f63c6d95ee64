"""Authentication at the edge, and the endpoints of the authorization server.

Every route calls ``access_for`` before it touches data, except the few in
``PUBLIC_ROUTES`` (health, the CapabilityStatement, SMART discovery, the JWKS
and the token endpoint). A test enumerates the routes and holds this list to it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from opentelemetry import trace

from gateway.fhir import fhir_json, json_response
from ingest.access import Access
from ingest.errors import InvalidInputError, InvalidRequestError, Issue
from security.errors import AuthenticationError, InvalidScopeError, SecurityError

log = structlog.get_logger("gateway.auth")
_tracer = trace.get_tracer("fhirlake.gateway")
router = APIRouter()

ACCESS_KEY = "fhirlake.access"

PUBLIC_ROUTES = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/fhir/metadata"),
        ("GET", "/.well-known/smart-configuration"),
        ("GET", "/fhir/.well-known/smart-configuration"),
        ("GET", "/.well-known/jwks.json"),
        ("POST", "/auth/token"),
        # The audit page's static shell: no data; its numbers come from /admin/audit/data with a token.
        ("GET", "/admin/audit"),
        ("GET", "/admin/audit.js"),
        ("GET", "/admin/audit.css"),
    }
)


def access_for(request: Request, *, write: bool = False) -> Access:
    """The caller's access context (raises 401 without a valid token, 403 for a write without mTLS)."""
    auth = request.app.state.container.auth
    with _tracer.start_as_current_span("authorize"):
        access: Access = auth.access(request.headers.get("authorization"), request.scope, write=write)
    request.scope[ACCESS_KEY] = access  # the audit record names the caller and what it was shown
    throttle = getattr(request.app.state, "throttle", None)
    if throttle is not None:
        throttle.admit(f"{access.principal.tenant}/{access.principal.client_id}", request.scope)
    return access


def flag_headers(access: Access) -> dict[str, str]:
    """Break-glass reads are marked in the response and in the log, for review."""
    if not access.flagged:
        return {}
    log.warning("break_glass_access", client_id=access.principal.client_id, tenant=access.principal.tenant)
    return {"X-Break-Glass": "flagged"}


def _token_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/auth/token"


@router.post("/auth/token")
async def token(request: Request) -> Response:
    no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    try:
        raw = await request.body()
        if len(raw) > 64 * 1024 or "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            raise InvalidRequestError("the token request must be a small application/x-www-form-urlencoded body")
        fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        body = request.app.state.container.auth.token(fields)
    except AuthenticationError:  # RFC 6749 5.2 error responses, never the submitted values
        return json_response({"error": "invalid_client"}, 401, no_store | {"WWW-Authenticate": "Bearer"})
    except InvalidScopeError:
        return json_response({"error": "invalid_scope"}, 403, no_store)
    except (SecurityError, InvalidRequestError) as exc:
        return json_response({"error": "invalid_request", "error_description": exc.code}, 400, no_store)
    return json_response(body, headers=no_store)


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> Response:
    return json_response(request.app.state.container.auth.oauth.jwks())


@router.get("/.well-known/smart-configuration")
@router.get("/fhir/.well-known/smart-configuration")
async def smart_configuration(request: Request) -> Response:
    base = str(request.base_url).rstrip("/")
    return json_response(request.app.state.container.auth.oauth.smart_configuration(base))


@router.post("/auth/break-glass")
async def break_glass(request: Request) -> Response:
    """A clinician's emergency access to one patient: reason and purpose of use BTG required."""
    access = access_for(request)
    try:
        doc: dict[str, Any] = await request.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    patient, reason, purpose = (str(doc.get(k) or "") for k in ("patient", "reason", "purposeOfUse"))
    if not patient:
        raise InvalidInputError("patient required", [Issue("required", "patient is required", ("patient",))])
    grant = request.app.state.container.auth.break_glass(access, patient, reason, purpose)
    log.warning("break_glass_opened", client_id=access.principal.client_id, grant=grant.grant_id)
    return fhir_json({"grant": grant.grant_id, "expires_us": grant.expires_us, "review": grant.review}, status=201)
