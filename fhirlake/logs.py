"""structlog configuration with an allowlist redaction processor.

Log events carry only keys known to be free of PHI; any other key's value is
replaced before rendering, so a careless ``log.info(..., name=...)`` cannot leak.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from fhirlake.tracing import trace_ids

SAFE_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "request_id",
        "method",
        "route",
        "status",
        "ms",
        "error",
        "rows",
        "seq",
        "table",
        "files",
        "commits",
        "host",
        "port",
        "workers",
        "tables",
        "bundles",
        "resources",
        "snapshots",
        "removed",
        "tls",
        "count",
        "seconds",
        "client_id",  # OAuth client ids and tenants name systems, never patients
        "tenant",
        "grant",
        "detail",
        "demo_client",
        "demo_client_dir",
        "trace_id",
        "span_id",
    }
)
REDACTED = "[redacted]"


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key not in SAFE_KEYS:
            event[key] = REDACTED
    return event


def configure(level: str = "info", json: bool = True, stream: Any = None) -> None:
    """JSON (or console) logs to ``stream`` (default: standard error), PHI-free by allowlist."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            trace_ids,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
