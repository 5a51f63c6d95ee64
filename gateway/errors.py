"""The one table from errors to HTTP status, and OperationOutcome rendering."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.errors import AuditError
from dr.errors import DrError
from fhirlake.errors import FhirlakeError
from gateway.fhir import fhir_json
from ingest import errors as ie
from ingest.journal import JournalClosedError
from lake.errors import LakeError
from lake.views.errors import ViewDefinitionError, ViewEvaluationError
from resilience.errors import CircuitOpenError, ResilienceError
from security.errors import (
    AuthenticationError,
    InvalidScopeError,
    KeyAccessError,
    KeyShreddedError,
    KmsUnavailableError,
)

log = structlog.get_logger("gateway")

STATUS_OF: dict[type[Exception], int] = {
    ie.InvalidInputError: 400,
    ie.NotSupportedError: 400,
    ie.ForbiddenError: 403,
    ie.ResourceNotFoundError: 404,
    ie.NotAcceptableError: 406,
    ie.ConflictError: 409,
    ie.ResourceGoneError: 410,
    ie.PreconditionFailedError: 412,
    ie.PayloadTooLargeError: 413,
    ie.UnsupportedMediaTypeError: 415,
    ie.ThrottledError: 429,
    ie.BackpressureError: 503,
    JournalClosedError: 503,
    ViewDefinitionError: 400,  # before LakeError: a bad view is the caller's, not an outage
    ViewEvaluationError: 422,
    LakeError: 503,
    KmsUnavailableError: 503,
    KeyAccessError: 503,  # fail closed: a key the KMS refuses is a key we do not have
    KeyShreddedError: 410,
    AuditError: 503,
    ResilienceError: 503,  # a dependency's breaker is open, or the request ran out of time
    DrError: 503,  # a fenced region (after a failover) accepts no writes
    AuthenticationError: 401,
    InvalidScopeError: 403,
}


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def outcome(issues: list[ie.Issue]) -> dict[str, object]:
    return {"resourceType": "OperationOutcome", "issue": [i.as_fhir() for i in issues]}


def outcome_of(exc: BaseException) -> dict[str, object]:
    if isinstance(exc, ie.IngestError):
        return outcome(exc.issues)
    if isinstance(exc, AuthenticationError):
        return outcome([ie.Issue("login", "authentication required: a valid bearer token")])
    if isinstance(exc, InvalidScopeError):
        return outcome([ie.Issue("forbidden", "the requested scope is not permitted")])
    if isinstance(exc, KeyShreddedError):
        return outcome([ie.Issue("deleted", "the patient of this resource was erased")])
    if isinstance(exc, KmsUnavailableError | KeyAccessError):
        return outcome([ie.Issue("transient", "the key management service is unavailable; no data was returned")])
    if isinstance(exc, ResilienceError):
        return outcome([ie.Issue("transient", exc.message)])  # names the dependency, never data
    if isinstance(exc, FhirlakeError) and status_of(exc) != 500:
        return outcome([ie.Issue("transient", "the service is temporarily unavailable")])
    return outcome([ie.Issue("exception", "internal server error")])


def error_response(exc: BaseException) -> Response:
    status = status_of(exc)
    headers = {"Retry-After": "5"} if status == 503 else None
    if isinstance(exc, ie.ThrottledError | CircuitOpenError):
        headers = {"Retry-After": str(exc.retry_after_s)}
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="fhirlake"'}
    return fhir_json(outcome_of(exc), status=status, headers=headers)


async def handle_fhirlake_error(_request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def handle_unexpected(_request: Request, exc: Exception) -> Response:
    # Unknown failures leak nothing: a generic 500; the log names only the type.
    log.error("unhandled_error", error=type(exc).__name__)
    return error_response(exc)


async def handle_http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    text = HTTPStatus(exc.status_code).phrase
    return fhir_json(outcome([ie.Issue(code, text)]), status=exc.status_code)


async def handle_request_validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        ie.Issue("invalid", str(err.get("msg", "invalid")), (".".join(str(p) for p in err.get("loc", ())),))
        for err in exc.errors()
    ]
    return fhir_json(outcome(issues), status=400)
