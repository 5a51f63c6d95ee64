"""``/metrics``: Prometheus text for operators only, with the lake backlog and the DR lag."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from fhirlake.settings import LimitSettings
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, flush_lake, make_settings, open_client
from tests.fixtures.identity import login, register


def _gauge(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[-1])


def test_metrics_need_an_operator_and_show_the_lake_backlog(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", commit_interval_s=3600.0)
    with open_client(settings) as client:
        assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
        assert client.get("/metrics").status_code == 403  # an EMR integration is no operator
        ops = login(client, register(settings.data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
        doc = {"resourceType": "Patient", "name": [{"family": "Zqxmetrics"}]}
        assert client.post("/fhir/Patient", content=orjson.dumps(doc)).status_code == 201
        reply = client.get("/metrics", headers=ops)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
        assert _gauge(reply.text, "fhirlake_up") == 1 and _gauge(reply.text, "fhirlake_lake_pending_rows") == 1
        assert "Zqxmetrics" not in reply.text
        flush_lake(client)
        assert _gauge(client.get("/metrics", headers=ops).text, "fhirlake_lake_pending_rows") == 0


_NAMED_SERIES = {
    "fhirlake_http_requests_total",
    "fhirlake_http_request_duration_seconds_bucket",
    "fhirlake_ingest_resources_total",
    "fhirlake_lake_commits_total",
    "fhirlake_lake_commit_duration_seconds_bucket",
    "fhirlake_lake_files_written_total",
    "fhirlake_kms_request_duration_seconds_bucket",
    "fhirlake_key_cache_hits_total",
    "fhirlake_key_cache_misses_total",
    "fhirlake_audit_append_duration_seconds_bucket",
    "fhirlake_throttled_total",
    "fhirlake_circuit_breaker_state",
    "fhirlake_lake_pending_rows",
    "fhirlake_process_resident_memory_bytes",
}


# a route template: "/", "/fhir/", "/fhir/{rtype}/{rid}/_history", "/fhir/Patient/$everything", …
_TEMPLATE = re.compile(r"/|(/([a-z_][a-z0-9_.-]*|\.well-known|\$[a-z-]+|\{[a-z_]+\}))+/?", re.IGNORECASE)


def _samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_the_named_series_move_with_traffic_and_carry_no_phi(tmp_path: Path) -> None:
    """Requests, ingest, commits, KMS, key cache, audit and throttling are counted; labels are templates."""
    canary, mrn = "Zqxmetricscanary", "MRN-7734-CANARY"
    settings = make_settings(tmp_path / "data", commit_interval_s=3600.0)
    settings.limits = LimitSettings(client_rate_per_s=1.0, client_burst=40)
    with open_client(settings) as client:
        ops = login(client, register(settings.data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
        before = _samples(client.get("/metrics", headers=ops).text)
        doc = {"resourceType": "Patient", "identifier": [{"value": mrn}], "name": [{"family": canary}]}
        created = client.post("/fhir/Patient", content=orjson.dumps(doc))
        assert created.status_code == 201
        pid = created.json()["id"]
        assert client.get(f"/fhir/Patient/{pid}").status_code == 200
        assert client.get(f"/fhir/Patient?identifier={mrn}&family={canary}").status_code == 200
        assert client.get(f"/fhir/Patient/{canary}").status_code == 404
        flush_lake(client)
        statuses = [client.get("/fhir/Patient?_count=1").status_code for _ in range(60)]
        assert 429 in statuses  # past the burst
        text = client.get("/metrics", headers=ops).text
    after = _samples(text)
    assert {s.name for s in after} >= _NAMED_SERIES, _NAMED_SERIES - {s.name for s in after}

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("fhirlake_http_requests_total", route="/fhir/{rtype}", method="POST", status="201") == 1
    assert grew("fhirlake_http_requests_total", route="/fhir/{rtype}/{rid}", method="GET", status="404") == 1
    assert grew("fhirlake_http_request_duration_seconds_count", route="/fhir/{rtype}/{rid}", method="GET") == 2
    assert grew("fhirlake_ingest_resources_total") == 1
    assert grew("fhirlake_lake_commits_total", table="patient", outcome="ok") == 1
    assert grew("fhirlake_lake_files_written_total", table="patient") >= 1
    assert grew("fhirlake_lake_commit_duration_seconds_count", table="patient") == 1
    assert grew("fhirlake_kms_request_duration_seconds_count", operation="generate_data_key") >= 1
    assert grew("fhirlake_key_cache_misses_total") >= 1 and grew("fhirlake_key_cache_hits_total") >= 1
    assert grew("fhirlake_audit_append_duration_seconds_count") >= 5
    assert grew("fhirlake_throttled_total", reason="client_rate") >= 1
    assert _value(after, "fhirlake_circuit_breaker_state", dependency="kms") == 0
    routes = {s.labels["route"] for s in after if "route" in s.labels}
    assert {"/fhir/{rtype}", "/fhir/{rtype}/{rid}", "/metrics"} <= routes
    assert all(r == "unmatched" or _TEMPLATE.fullmatch(r) for r in routes), routes  # templates, never paths
    assert not routes & {"/fhir/Patient", f"/fhir/Patient/{pid}", f"/fhir/Patient/{canary}"}
    for secret in (canary, mrn, pid, "7734"):
        assert secret not in text


@pytest.mark.slow
def test_two_gateway_processes_serve_the_sum_of_their_counters(server_factory: Any, tmp_path: Path) -> None:
    """With ``serve --workers 2`` any process answers a scrape with every process's requests."""
    server = server_factory(tmp_path / "data", "--workers", "2", FHIRLAKE_INGEST__VALIDATION_WORKERS="0")
    server.start()
    token_url = f"{server.origin}/auth/token"
    with httpx.Client(timeout=30, headers={"Content-Type": "application/fhir+json", **server.headers()}) as http:
        doc = {"resourceType": "Patient", "name": [{"family": "Zqxworkers"}]}
        pid = http.post(f"{server.base}/Patient", content=orjson.dumps(doc)).json()["id"]
        reads = 40  # new connections: uvicorn's processes share the socket, so both serve some
        for _ in range(reads):
            with httpx.Client(timeout=30, headers=http.headers) as fresh:
                assert fresh.get(f"{server.base}/Patient/{pid}").status_code == 200
        ops = login(http, register(server.data_dir, Role.OPS, "system/Patient.d"), token_url).headers()
        for _ in range(4):
            with httpx.Client(timeout=30, headers=ops) as fresh:
                text = fresh.get(f"{server.origin}/metrics").text
            got = _value(_samples(text), "fhirlake_http_requests_total", route="/fhir/{rtype}/{rid}", status="200")
            assert got == reads
    assert "Zqxworkers" not in text and pid not in text
    assert list((server.data_dir / "run" / "metrics").glob("*.db"))
