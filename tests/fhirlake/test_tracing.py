"""One request's trace: the spans of every layer, trace ids in the logs, no PHI in spans, logs or metrics."""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fhirlake import logs
from fhirlake.tracing import add_processor
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, flush_lake, make_settings, open_client
from tests.fixtures.identity import login, register

_EXPORTER = InMemorySpanExporter()
# Never closed: loggers cached while it is configured keep writing here for the rest of the session.
_LOG_SINK = io.StringIO()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    if not getattr(_EXPORTER, "_attached", False):
        add_processor(SimpleSpanProcessor(_EXPORTER))
        _EXPORTER._attached = True  # type: ignore[attr-defined]
    _EXPORTER.clear()
    return _EXPORTER


def test_a_write_and_a_cold_read_show_every_layer_and_no_phi(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    canary = "Zqxtracecanary"
    logs.configure("info", json=True, stream=_LOG_SINK)
    start = _LOG_SINK.tell()
    with open_client(make_settings(tmp_path / "data", hot_retention_s=0)) as client:
        doc = {"resourceType": "Patient", "name": [{"family": canary}], "birthDate": "1961-07-04"}
        created = client.post("/fhir/Patient", content=orjson.dumps(doc))
        assert created.status_code == 201
        pid = created.json()["id"]
        flush_lake(client)
        assert client.get(f"/fhir/Patient/{pid}?family={canary}").status_code == 200
        ops = login(client, register(tmp_path / "data", Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
        metrics = client.get("/metrics", headers=ops)
    assert metrics.status_code == 200 and 'route="/fhir/{rtype}/{rid}"' in metrics.text
    assert canary not in metrics.text and pid not in metrics.text
    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    expected = {"HTTP POST /fhir/{rtype}", "HTTP GET /fhir/{rtype}/{rid}", "authorize", "validate"}
    expected |= {"keys.prepare", "journal.commit", "audit.append", "lake.commit", "lake.read"}
    assert expected <= names, expected - names
    assert "kms.generate_data_key" in names
    post = next(s for s in finished if s.name == "HTTP POST /fhir/{rtype}")
    children = {s.name for s in finished if s.context.trace_id == post.context.trace_id}
    assert {"authorize", "validate", "journal.commit", "audit.append"} <= children
    everything = json.dumps([(s.name, dict(s.attributes or {}), [e.name for e in s.events]) for s in finished])
    assert canary not in everything and "1961" not in everything and pid not in everything
    _LOG_SINK.seek(start)
    lines = [json.loads(line) for line in _LOG_SINK.read().splitlines() if line.startswith("{")]
    traced = {line.get("trace_id") for line in lines if line.get("event") == "request"}
    assert format(post.context.trace_id, "032x") in traced
    assert canary not in json.dumps(lines)
