"""OpenTelemetry traces: configured once per process, exported by OTLP or not at all.

With ``observability.traces = "none"`` (the embedded default) no tracer provider
is installed and every span the code opens is the API's no-op: tracing costs
nothing. ``"otlp"`` exports batches over OTLP/HTTP to ``observability.otlp_endpoint``.
Span names and attributes are route templates, resource types, table names and
counts: never a value from a request (``tests/fhirlake/test_tracing.py`` seeds canary PHI).
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_lock = threading.Lock()
_provider: TracerProvider | None = None


def _installed(service_name: str) -> TracerProvider:
    global _provider
    with _lock:
        if _provider is None:
            _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            trace.set_tracer_provider(_provider)
        return _provider


def configure_tracing(traces: str, otlp_endpoint: str | None, service_name: str = "fhirlake") -> None:
    """Install the exporter the settings name (``none``: nothing at all)."""
    if traces == "none":
        return
    if traces == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint) if otlp_endpoint else OTLPSpanExporter()
        _installed(service_name).add_span_processor(BatchSpanProcessor(exporter))
        return
    raise ValueError(f"unknown trace exporter {traces!r}")


def add_processor(processor: SpanProcessor, service_name: str = "fhirlake") -> None:
    """Attach a span processor (tests: an in-memory exporter) to this process's provider."""
    _installed(service_name).add_span_processor(processor)


def trace_ids(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current trace and span ids on every log line."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
