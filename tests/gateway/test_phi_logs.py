"""Canary PHI sent every way a client can send it never reaches the server's log."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.data import synthea_paths

HEADERS = {"Content-Type": "application/fhir+json"}


def _canary_bundle(canary: str) -> bytes:
    bundle = orjson.loads(synthea_paths()[0].read_bytes())
    patient = bundle["entry"][0]["resource"]
    patient["name"] = [{"family": canary, "given": [canary]}]
    patient["identifier"].append({"system": "http://hl7.org/fhir/sid/us-ssn", "value": canary})
    patient["telecom"] = [{"system": "phone", "value": canary}]
    return orjson.dumps(bundle)


@pytest.mark.slow
def test_no_canary_in_server_log(server_factory: Any, tmp_path: Path) -> None:
    canary = f"CANARY{uuid.uuid4().hex}"
    server = server_factory(FHIRLAKE_LOG_LEVEL="debug")
    server.start()
    with httpx.Client(timeout=30, headers={**HEADERS, **server.headers()}) as http:
        ok = http.post(server.base, content=_canary_bundle(canary))
        assert ok.status_code == 200
        assert ok.headers["x-request-id"]
        bad = orjson.loads(_canary_bundle(canary))
        bad["entry"][0]["resource"]["birthDate"] = canary
        bad["entry"][1]["resource"]["status"] = canary
        assert http.post(server.base, content=orjson.dumps(bad)).status_code == 400
        assert http.post(server.base, content=b'{"resourceType": "' + canary.encode()).status_code == 400
        assert http.get(f"{server.base}/Patient", params={"identifier": f"urn:x|{canary}"}).status_code == 200
        assert http.get(f"{server.base}/Patient/{canary}").status_code == 404
        assert http.get(f"{server.base}/{canary}/x").status_code == 404
        assert http.put(f"{server.base}/Patient/{canary}", content=b"{}").status_code == 400
    server.stop()
    log = server.log_path.read_text()
    assert '"event": "request"' in log  # the log is really being written
    assert canary not in log
