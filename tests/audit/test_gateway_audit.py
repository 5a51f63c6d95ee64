"""Every request leaves exactly one audit record before its answer; no record, no answer (503)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from audit.segments import SegmentFileSink
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, container_of
from tests.fixtures.identity import login, register, token_form

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NO_CREDENTIALS = {"Authorization": "", "x-client-cert": ""}
ER7 = "x-application/hl7-v2+er7"
HL7_ADT = b"MSH|^~\\&|ADT|HOSP|||20240101||ADT^A04|C9|P|2.5\rPID|1||1^^^HOSP^MR||Doe^Jo\r"


def _events(client: TestClient) -> list[dict[str, Any]]:
    trail = container_of(client).settings.data_dir / "audit" / "trail-1"
    out = []
    for segment in sorted(trail.glob("segment-*.log")):
        for line in segment.read_bytes().splitlines():
            record = orjson.loads(line)
            if "event" in record:
                out.append(record["event"])
    return out


def _route(event: dict[str, Any]) -> str:
    """``METHOD route-template`` of a request's record (the query entity holds the template)."""
    query = next(e["query"] for e in event["entity"] if "query" in e)
    return base64.b64decode(query).decode().split("?", 1)[0]


def _app_routes(client: TestClient) -> list[tuple[str, str]]:
    from tests.security.test_http_auth import _routes

    return _routes(client)


def _action(event: dict[str, Any]) -> str:
    return next(c["code"] for c in event["subtype"] if c["system"] == "urn:fhirlake:audit-action")


def test_every_route_and_outcome_leaves_exactly_one_record(client: TestClient) -> None:
    data_dir = container_of(client).settings.data_dir
    patient = client.post(
        "/fhir/Patient", content=orjson.dumps({"resourceType": "Patient", "name": [{"family": "Zqxcanary"}]})
    )
    pid = patient.json()["id"]
    ops = login(client, register(data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
    doctor = login(client, register(data_dir, Role.CLINICIAN, "user/*.rs", organization="none"), TOKEN_URL).headers()
    body = orjson.dumps({"resourceType": "Patient", "id": pid, "name": [{"family": "Aud2"}]})
    bundle = orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": []})
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/healthz", {}, 200, "admin"),
        ("GET", "/readyz", {}, 200, "admin"),
        ("GET", "/metrics", {}, 403, "denied"),
        ("GET", "/fhir/metadata", {}, 200, "admin"),
        ("GET", "/.well-known/jwks.json", {}, 200, "admin"),
        ("GET", "/fhir/.well-known/smart-configuration", {}, 200, "admin"),
        ("POST", "/auth/token", {"data": {"grant_type": "password"}, "headers": FORM}, 400, "token"),
        ("GET", "/fhir/Patient", {"params": {"family": "Zqxcanary"}}, 200, "search"),
        ("GET", "/fhir/Patient", {"headers": NO_CREDENTIALS}, 401, "login-failed"),
        ("GET", f"/fhir/Patient/{pid}", {}, 200, "read"),
        ("GET", f"/fhir/Patient/{pid}", {"headers": doctor}, 404, "denied"),
        ("GET", "/fhir/Patient/does-not-exist", {}, 404, "read"),
        ("GET", f"/fhir/Patient/{pid}/_history/1", {}, 200, "vread"),
        ("GET", f"/fhir/Patient/{pid}/_history", {}, 200, "history"),
        ("GET", "/fhir/Patient/_history", {}, 200, "history"),
        ("GET", f"/fhir/Patient/{pid}/$everything", {}, 200, "everything"),
        ("GET", "/fhir/$export", {}, 400, "export"),
        ("POST", "/fhir/ViewDefinition/$run", {"content": b'{"resourceType":"Patient"}'}, 400, "export"),
        ("GET", "/fhir/Patient/$export", {"headers": {"Prefer": "respond-async"}}, 202, "export"),
        ("GET", "/fhir/Group/nogroup/$export", {"headers": {"Prefer": "respond-async"}}, 404, "export"),
        ("GET", "/fhir/$export-status/nojob", {}, 404, "export"),
        ("GET", "/fhir/$export-file/nojob/Patient.ndjson", {}, 404, "export"),
        ("DELETE", "/fhir/$export-status/nojob", {}, 404, "export"),
        ("PUT", f"/fhir/Patient/{pid}", {"content": body}, 200, "update"),
        ("POST", "/fhir/Patient", {"content": b"{not json"}, 400, "create"),
        ("POST", "/fhir/Patient", {"content": body, "headers": doctor}, 403, "denied"),
        ("POST", "/fhir", {"content": bundle}, 200, "transaction"),
        ("DELETE", "/fhir/Patient/nobody", {}, 204, "delete"),
        ("POST", "/auth/break-glass", {"json": {"patient": f"Patient/{pid}"}, "headers": doctor}, 400, "break-glass"),
        ("POST", f"/fhir/Patient/{pid}/$purge", {"headers": ops}, 200, "purge"),
        ("GET", "/no/such/route", {}, 404, "admin"),
        ("GET", "/.well-known/smart-configuration", {}, 200, "admin"),
        ("PUT", "/fhir/Patient", {"params": {"identifier": "urn:x|1"}, "content": b"{}"}, 400, "update"),
        ("DELETE", "/fhir/Patient", {"params": {"identifier": "urn:x|none"}}, 204, "delete"),
        ("POST", "/fhir/", {"content": bundle}, 200, "transaction"),
        ("GET", "/fhir/AuditEvent", {}, 403, "denied"),
        ("GET", "/admin/audit", {}, 200, "admin"),
        ("GET", "/admin/audit.js", {}, 200, "admin"),
        ("GET", "/admin/audit.css", {}, 200, "admin"),
        ("GET", "/admin/audit/data", {}, 403, "denied"),
        (
            "POST",
            "/ingest/hl7v2",
            {"content": HL7_ADT, "headers": {"Content-Type": ER7, "Accept": "*/*"}},
            200,
            "transaction",
        ),
        (
            "POST",
            "/fhir/Patient/$match",
            {"json": {"resourceType": "Patient", "name": [{"family": "Zqxcanary"}]}},
            200,
            "search",
        ),
        ("POST", "/fhir/$import", {"content": b"{}"}, 400, "transaction"),
        ("GET", "/ingest/dead-letters", {"headers": ops}, 200, "admin"),
        ("POST", "/ingest/dead-letters/99/$retry", {"headers": ops}, 404, "admin"),
    ]
    for method, url, kwargs, status, action in cases:
        before = len(_events(client))
        reply = client.request(method, url, **kwargs)
        assert reply.status_code == status, (method, url, reply.text)
        events = _events(client)
        assert len(events) == before + 1, (method, url)
        assert _action(events[-1]) == action, (method, url)
        assert events[-1]["outcome"] == ("0" if status < 400 else "4")
    served = {_route(e) for e in _events(client)}
    every = {f"{method} {path}" for method, path in _app_routes(client)}
    assert every <= served, f"routes without an audit case: {sorted(every - served)}"
    read = next(e for e in _events(client) if _action(e) == "read" and e["outcome"] == "0")
    assert any(e.get("what", {}).get("reference") == f"Patient/{pid}" for e in read["entity"])
    search = next(e for e in _events(client) if _action(e) == "search")
    assert "Zqxcanary" not in orjson.dumps(search).decode()  # the query is kept without its values


def test_no_record_no_answer(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    created = client.post(
        "/fhir/Patient", content=orjson.dumps({"resourceType": "Patient", "name": [{"family": "Quiet"}]})
    )
    pid = created.json()["id"]

    def broken(self: SegmentFileSink, lines: Any, checkpoints: Any = ()) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(SegmentFileSink, "append", broken)
    reply = client.get(f"/fhir/Patient/{pid}")
    assert reply.status_code == 503
    assert reply.json()["resourceType"] == "OperationOutcome"
    assert "Quiet" not in reply.text
    assert client.post("/fhir/Patient", content=orjson.dumps({"resourceType": "Patient"})).status_code == 503
    monkeypatch.undo()
    deadline = time.monotonic() + 10
    while client.get(f"/fhir/Patient/{pid}").status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_cli_verifies_the_trail_of_a_stopped_server(client: TestClient, tmp_path: Path) -> None:
    assert (
        client.post(
            "/auth/token",
            data=token_form(register(container_of(client).settings.data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL),
            headers=FORM,
        ).status_code
        == 200
    )
    data_dir = container_of(client).settings.data_dir
    container_of(client).auditing.close()  # as on shutdown: a final signed checkpoint
    done = subprocess.run(
        [sys.executable, "-m", "fhirlake.cli", "audit", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert orjson.loads(done.stdout)["ok"] is True


def test_operator_commands_are_recorded_with_their_outcome(tmp_path: Path) -> None:
    from audit.verify import verify

    data = tmp_path / "data"
    cli = [sys.executable, "-m", "fhirlake.cli"]
    assert subprocess.run([*cli, "keys", "rotate", "--data-dir", str(data)], capture_output=True).returncode == 0
    failed = subprocess.run(
        [*cli, "keys", "shred", "--patient", "nobody", "--data-dir", str(data)], capture_output=True
    )
    assert failed.returncode == 2
    events = []
    for trail in sorted((data / "audit").glob("trail-*")):
        assert verify(trail).ok
        for segment in sorted(trail.glob("segment-*.log")):
            events += [orjson.loads(line)["event"] for line in segment.read_bytes().splitlines() if b'"event"' in line]
    assert [(_action(e), e["outcome"]) for e in events] == [("key-rotate", "0"), ("key-shred", "4")]
    assert events[1]["entity"][0]["what"]["identifier"]["value"] != "nobody"  # the patient, by pseudonym only


def test_audit_events_for_compliance_officers_only(client: TestClient) -> None:
    data_dir = container_of(client).settings.data_dir
    created = client.post("/fhir/Patient", content=orjson.dumps({"resourceType": "Patient"})).json()["id"]
    assert client.get(f"/fhir/Patient/{created}").status_code == 200
    officer = login(client, register(data_dir, Role.COMPLIANCE_OFFICER, "system/*.rs"), TOKEN_URL).headers()
    found = client.get("/fhir/AuditEvent", params={"patient": created, "date": "ge2020-01-01"}, headers=officer)
    assert found.status_code == 200, found.text
    actions = [_action(e["resource"]) for e in found.json()["entry"]]
    assert "read" in actions and all(e["resource"]["resourceType"] == "AuditEvent" for e in found.json()["entry"])
    assert client.get("/fhir/AuditEvent").status_code == 403  # an EMR integration may not read the trail
    assert _action(_events(client)[-1]) == "denied"
