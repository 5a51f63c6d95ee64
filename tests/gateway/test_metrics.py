"""``/metrics``: Prometheus text for operators only, with the lake backlog and the DR lag."""

from __future__ import annotations

from pathlib import Path

import orjson

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
