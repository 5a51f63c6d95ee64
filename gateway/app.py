"""The FastAPI application, built around an already wired container."""

from __future__ import annotations

import inspect
import time
import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from opentelemetry import context, trace
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirlake.errors import FhirlakeError
from gateway import errors
from gateway.admin import router as admin_router
from gateway.audit import AuditMiddleware
from gateway.auth import access_for
from gateway.auth import router as auth_router
from gateway.export_routes import router as export_router
from gateway.fhir import fhir_json
from gateway.ingest_routes import router as ingest_router
from gateway.routes import router
from gateway.throttle import DeadlineMiddleware, ShedMiddleware, Throttle
from ingest.journal import JournalClosedError
from telemetry.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

log = structlog.get_logger("gateway")
_tracer = trace.get_tracer("fhirlake.gateway")


class RequestContext:
    """Binds a request id for logging and logs one PHI-free line per request (pure ASGI, no extra task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(Headers(scope=scope).get("x-request-id"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        span = _tracer.start_span(f"HTTP {scope['method']}", kind=trace.SpanKind.SERVER)
        span.set_attribute("http.request.method", scope["method"])
        token = context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            span.update_name(f"HTTP {scope['method']} {template}")  # the template, never the raw path
            span.set_attribute("http.route", template)
            span.set_attribute("http.response.status_code", status)
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            HTTP_REQUEST_SECONDS.labels(template, scope["method"]).observe(elapsed)
            log.info("request", method=scope["method"], route=template, status=status, ms=round(elapsed * 1000, 2))
            context.detach(token)
            span.end()
            structlog.contextvars.unbind_contextvars("request_id")


def _request_id(given: str | None) -> str:
    """A client's X-Request-Id is kept only if it is a UUID: free text could carry an identifier into logs."""
    if given:
        try:
            return str(uuid.UUID(given))
        except ValueError:
            pass
    return str(uuid.uuid4())


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.160 traces requests itself once a tracer provider exists, with the raw query
    string (``url.query``: identifiers, names) and exception messages. Our own request span names
    the route template only, so the native one is switched off where it exists."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}
    return {"telemetry": off}


def create_app(container: Any) -> FastAPI:
    app = FastAPI(title="fhirlake", docs_url=None, redoc_url=None, openapi_url=None, **_no_native_telemetry())
    app.state.container = container
    app.state.base_url = container.settings.server.base_url
    app.include_router(auth_router)  # first: /fhir/.well-known/… must not fall into /fhir/{rtype}/{rid}
    app.include_router(export_router)  # before /fhir/{rtype}/{rid}, which would take $export for an id
    app.include_router(ingest_router)  # before /fhir/{rtype}: /fhir/$import and /fhir/Patient/$match
    app.include_router(router)
    app.include_router(admin_router)
    app.add_exception_handler(FhirlakeError, errors.handle_fhirlake_error)
    app.add_exception_handler(JournalClosedError, errors.handle_fhirlake_error)
    app.add_exception_handler(StarletteHTTPException, errors.handle_http_error)
    app.add_exception_handler(RequestValidationError, errors.handle_request_validation)
    app.add_exception_handler(Exception, errors.handle_unexpected)

    limits = container.settings.limits
    app.state.throttle = Throttle(limits.client_rate_per_s, limits.client_burst, limits.client_in_flight)
    app.add_middleware(  # innermost: shed requests are audited
        ShedMiddleware, max_in_flight=limits.max_in_flight, max_rss_mb=limits.max_rss_mb
    )
    app.add_middleware(DeadlineMiddleware, seconds=limits.request_timeout_s)
    app.add_middleware(AuditMiddleware)  # inner: the request log below also sees a 503 from audit
    app.add_middleware(RequestContext)

    @app.get("/healthz")
    async def healthz() -> Response:
        return fhir_json({"status": "ok"})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text; never public: an authenticated caller allowed to read operations data (ops)."""
        access_for(request).require_kind("admin", "read")
        text = await run_in_threadpool(container.metrics_text)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/readyz")
    async def readyz() -> Response:
        """ready / degraded (200) or not-ready (503), per dependency; names and states only, no data."""
        report = await run_in_threadpool(container.readiness)  # may probe the KMS over the network
        return fhir_json(report, status=503 if report["status"] == "not-ready" else 200)

    return app
