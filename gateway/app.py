"""The FastAPI application, built around an already wired container."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fhirlake.errors import FhirlakeError
from gateway import errors
from gateway.fhir import fhir_json
from gateway.routes import router
from ingest.journal import JournalClosedError

log = structlog.get_logger("gateway")


def create_app(container: Any) -> FastAPI:
    app = FastAPI(title="fhirlake", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.container = container
    app.state.base_url = container.settings.server.base_url
    app.include_router(router)
    app.add_exception_handler(FhirlakeError, errors.handle_fhirlake_error)
    app.add_exception_handler(JournalClosedError, errors.handle_fhirlake_error)
    app.add_exception_handler(StarletteHTTPException, errors.handle_http_error)
    app.add_exception_handler(RequestValidationError, errors.handle_request_validation)
    app.add_exception_handler(Exception, errors.handle_unexpected)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        if len(request_id) > 64 or not request_id.replace("-", "").isalnum():
            request_id = str(uuid.uuid4())
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        response.headers["X-Request-Id"] = request_id
        route = request.scope.get("route")
        log.info(
            "request",
            request_id=request_id,
            method=request.method,
            route=getattr(route, "path", "unmatched"),
            status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return response

    @app.get("/healthz")
    async def healthz() -> Response:
        return fhir_json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = container.ready()
        return fhir_json({"status": "ready" if ready else "not-ready"}, status=200 if ready else 503)

    return app
