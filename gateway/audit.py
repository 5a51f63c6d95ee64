"""Every request leaves one audit record before its answer leaves (pure ASGI middleware).

The response start is held back until the record is durable. If the audit
trail cannot take it, the caller gets 503 and an OperationOutcome instead of
the answer — no PHI leaves without its record.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import ACCESS_KEY
from ingest.auditing import RequestFacts
from telemetry.metrics import AUDIT_APPEND_SECONDS, AUDIT_SINK_FAILURES

_tracer = trace.get_tracer("fhirlake.audit")

log = structlog.get_logger("gateway.audit")

_UNAVAILABLE = orjson.dumps(
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "diagnostics": "the audit trail is unavailable"}],
    }
)


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {"swallow": False, "started": False}

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if not await self._record(scope, int(message["status"])):
                    state["swallow"] = True
                    await _send_unavailable(send)
                    return
            elif state["swallow"]:
                return
            await send(message)

        await self.app(scope, receive, audited_send)

    async def _record(self, scope: Scope, status: int) -> bool:
        container = scope["app"].state.container
        route = scope.get("route")
        client = scope.get("client")
        facts = RequestFacts(
            method=scope["method"],
            route=getattr(route, "path", "unmatched"),
            status=status,
            address=str(client[0]) if client else None,
            query=scope.get("query_string", b"").decode("latin-1"),
            access=scope.get(ACCESS_KEY),
        )
        started = time.perf_counter()
        try:
            with _tracer.start_as_current_span("audit.append"):
                await asyncio.wrap_future(container.auditing.submit(facts))
        except Exception as exc:  # any failure to record means the answer must not leave
            AUDIT_SINK_FAILURES.labels("trail").inc()
            log.error("audit_unavailable", error=type(exc).__name__)
            return False
        AUDIT_APPEND_SECONDS.observe(time.perf_counter() - started)
        return True


async def _send_unavailable(send: Send) -> None:
    headers = [(b"content-type", b"application/fhir+json; charset=utf-8"), (b"retry-after", b"5")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _UNAVAILABLE})
