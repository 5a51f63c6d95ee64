"""Access to records labelled sensitive is recorded (codes and counts, no PHI) and reported as an anomaly."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit import reports
from audit.errors import AuditEventError
from audit.events import AuditAction, audit_event
from security.labels import ACT_CODE, CONFIDENTIALITY, sensitivity
from security.principal import Role
from tests.audit.test_gateway_audit import _action, _events, _route
from tests.audit.test_reports import _run
from tests.fixtures.app import TOKEN_URL, make_settings, open_client
from tests.fixtures.canary import Canary
from tests.fixtures.identity import EMR_SCOPE, login, register

RESTRICTED = {"system": CONFIDENTIALITY, "code": "R"}
PSYCHIATRY = {"system": ACT_CODE, "code": "PSY"}


def _labelled(canary: Canary) -> bytes:
    bundle = canary.bundle()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["meta"] = {"security": [RESTRICTED]}
        elif resource["resourceType"] == "Condition":
            resource["meta"] = {"security": [PSYCHIATRY, {"system": "urn:other", "code": "PSY"}]}
    return orjson.dumps(bundle)


def _sensitivity(event: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, str]] | None:
    found = [e for e in event.get("entity", []) if "securityLabel" in e]
    if not found:
        return None
    (entity,) = found
    labels = [(c["system"], c["code"]) for c in entity["securityLabel"]]
    return labels, {d["type"]: d["valueString"] for d in entity["detail"]}


@dataclass
class Scene:
    data_dir: Path
    agent: str  # the EMR client that read the records
    events: dict[str, list[dict[str, Any]]]  # its audit records: all, and per route
    canary: Canary
    summary: dict[str, Any]  # what the audit page's data endpoint answered a compliance officer


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    """A gateway where an EMR wrote a restricted Patient and a PSY Condition, then read them and more."""
    canary = Canary()
    settings = make_settings(tmp_path / "data")
    with open_client(settings) as client:
        emr = login(client, register(settings.data_dir, Role.EMR_INTEGRATION, EMR_SCOPE, cert=True), TOKEN_URL)
        client.headers.update(emr.headers())
        written = client.post("/fhir", content=_labelled(canary))
        assert written.status_code == 200, written.text
        where = {e["response"]["location"].split("/")[0]: e["response"]["location"] for e in written.json()["entry"]}
        pid, cid = (where[t].split("/")[1] for t in ("Patient", "Condition"))
        oid = where["Observation"].split("/")[1]
        before = len(_events(client))
        replies = {
            "patient": client.get(f"/fhir/Patient/{pid}"),
            "condition": client.get(f"/fhir/Condition/{cid}"),
            "observation": client.get(f"/fhir/Observation/{oid}"),
            "search": client.get("/fhir/Condition", params={"patient": pid}),
            "everything": client.get(f"/fhir/Patient/{pid}/$everything"),
            "history": client.get(f"/fhir/Condition/{cid}/_history"),
        }
        view = {"resourceType": "ViewDefinition", "status": "active", "resource": "Condition"}
        view["select"] = [{"column": [{"name": "id", "path": "id"}]}]
        replies["view"] = client.post("/fhir/ViewDefinition/$run", content=orjson.dumps(view))
        assert {name: r.status_code for name, r in replies.items()} == dict.fromkeys(replies, 200)
        assert replies["condition"].json()["meta"]["security"][0] == PSYCHIATRY
        events = _events(client)[before:]
        officer = login(client, register(settings.data_dir, Role.COMPLIANCE_OFFICER, "system/*.rs"), TOKEN_URL)
        summary = client.get("/admin/audit/data", headers=officer.headers())
        assert summary.status_code == 200
    by_route = {
        name: [e for e in events if _action(e) != "admin" and _route(e) == target]
        for name, target in (
            ("patient", "GET /fhir/{rtype}/{rid}"),
            ("search", "GET /fhir/{rtype}"),
            ("everything", "GET /fhir/Patient/{rid}/$everything"),
            ("history", "GET /fhir/{rtype}/{rid}/_history"),
            ("view", "POST /fhir/ViewDefinition/$run"),
        )
    }
    return Scene(settings.data_dir, emr.client_id, {"all": events, **by_route}, canary, summary.json())


def test_labels_of_a_resource_are_the_sensitive_ones_only() -> None:
    resource = {"meta": {"security": [RESTRICTED, {"system": CONFIDENTIALITY, "code": "N"}, PSYCHIATRY]}}
    assert sensitivity(resource) == {(CONFIDENTIALITY, "R"), (ACT_CODE, "PSY")}
    assert sensitivity({"meta": {"security": [{"system": "urn:x", "code": "HIV"}]}}) == frozenset()
    assert sensitivity({"resourceType": "Observation"}) == frozenset()


def test_reads_of_sensitive_records_carry_their_codes_and_counts(
    scene: Scene,
) -> None:
    events = scene.events
    patient_read, condition_read, observation_read = events["patient"]
    assert _sensitivity(patient_read) == (
        [(CONFIDENTIALITY, "R")],
        {"sensitive-records": "1", "sensitive-records:R": "1"},
    )
    assert _sensitivity(condition_read) == (
        [(ACT_CODE, "PSY")],
        {"sensitive-records": "1", "sensitive-records:PSY": "1"},
    )
    assert _sensitivity(observation_read) is None
    (search,) = events["search"]
    assert _sensitivity(search) == ([(ACT_CODE, "PSY")], {"sensitive-records": "1", "sensitive-records:PSY": "1"})
    (everything,) = events["everything"]
    labels, details = _sensitivity(everything) or ([], {})
    assert sorted(labels) == [(ACT_CODE, "PSY"), (CONFIDENTIALITY, "R")]
    assert details == {"sensitive-records": "2", "sensitive-records:PSY": "1", "sensitive-records:R": "1"}
    (history,) = events["history"]
    assert _sensitivity(history) == ([(ACT_CODE, "PSY")], {"sensitive-records": "1", "sensitive-records:PSY": "1"})
    (view,) = events["view"]
    assert _sensitivity(view) == ([(ACT_CODE, "PSY")], {"sensitive-records": "1", "sensitive-records:PSY": "1"})


def test_no_phi_reaches_the_audit_trail(scene: Scene) -> None:
    data_dir, canary = scene.data_dir, scene.canary
    lines = [line for path in (data_dir / "audit").rglob("segment-*.log") for line in path.read_text().splitlines()]
    assert lines and any("securityLabel" in line for line in lines)
    leaked = [value for value in canary.phi_values() if any(value in line for line in lines)]
    assert leaked == []


def test_anomaly_report_lists_exactly_the_sensitive_accesses(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, agent, events = scene.data_dir, scene.agent, scene.events
    day = reports.recorded(events["all"][0]).date().isoformat()
    expected = {"kind": "sensitive-access", "agent": agent, "day": day, "count": 7, "baseline": ""}
    expected["detail"] = "codes PSY=5 R=2"
    rows = json.loads(_run(data_dir, capsys, "anomalies", "--format", "json"))
    assert [r for r in rows if r["kind"] == "sensitive-access"] == [expected]
    table = list(csv.DictReader(io.StringIO(_run(data_dir, capsys, "anomalies", "--format", "csv"))))
    assert [r for r in table if r["kind"] == "sensitive-access"] == [{**expected, "count": "7"}]
    page = _run(data_dir, capsys, "anomalies", "--format", "html")
    assert f"<td>sensitive-access</td><td>{agent}</td><td>{day}</td><td>7</td>" in page
    assert "codes PSY=5 R=2" in page
    bundle = json.loads(_run(data_dir, capsys, "anomalies", "--format", "fhir"))
    sensitive = [e for e in events["all"] if _sensitivity(e) is not None]
    assert len(sensitive) == 6
    flagged = [entry["resource"] for entry in bundle["entry"]]
    assert [e for e in flagged if _sensitivity(e) is not None] == sensitive


def test_audit_page_data_lists_the_sensitive_access(
    scene: Scene,
) -> None:
    rows = [r for r in scene.summary["anomalies"] if r["kind"] == "sensitive-access"]
    assert [(r["agent"], r["count"], r["detail"]) for r in rows] == [(scene.agent, 7, "codes PSY=5 R=2")]


def _read(when: datetime, *, labels: dict[tuple[str, str], int], count: int, **kw: Any) -> dict[str, Any]:
    return audit_event(
        AuditAction.READ,
        client_id="app-a",
        user="Practitioner/doc1",
        role="clinician",
        recorded=when,
        outcome_code="200",
        security_labels=labels,
        sensitive_count=count,
        **kw,
    )


def test_break_glass_sensitive_accesses_are_marked() -> None:
    psy = {(ACT_CODE, "PSY"): 1}
    events = [
        _read(datetime(2024, 3, 1, 10, tzinfo=UTC), labels=psy, count=1),
        _read(datetime(2024, 3, 1, 11, tzinfo=UTC), labels={(ACT_CODE, "SUD"): 2}, count=2, purpose_of_use=["BTG"]),
        _read(datetime(2024, 3, 2, 11, tzinfo=UTC), labels={}, count=0),
        audit_event(
            AuditAction.CREATE,
            client_id="app-a",
            recorded=datetime(2024, 3, 2, 12, tzinfo=UTC),
            security_labels=psy,
            sensitive_count=1,
        ),
    ]
    rows = [r for r in reports.anomalies(events).rows if r["kind"] == "sensitive-access"]
    assert rows == [
        {
            "kind": "sensitive-access",
            "agent": "Practitioner/doc1",
            "day": "2024-03-01",
            "count": 3,
            "baseline": "",
            "detail": "codes PSY=1 SUD=2; break-glass 1/2",
        }
    ]
    assert list(reports.flagged_events(events, rows)) == events[:2]


def test_a_label_that_is_not_a_code_is_refused() -> None:
    with pytest.raises(AuditEventError, match="label") as refused:
        audit_event(AuditAction.READ, security_labels={(ACT_CODE, "Jane Doe"): 1}, sensitive_count=1)
    assert "Jane" not in str(refused.value)
    assert "entity" not in audit_event(AuditAction.READ, security_labels={(ACT_CODE, "PSY"): 1}, sensitive_count=0)
