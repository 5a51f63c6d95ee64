"""Compliance reports answer the questions an auditor asks, from the stored trail alone."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import reports
from audit.events import AuditAction, Outcome, audit_event
from audit.reports import AuditReportError
from audit.segments import SegmentFileSink
from audit.trail import AuditTrail
from fhirlake import audit_reports_cli
from fhirlake.cli import _add_data_dir, _print, _settings

K1, K2 = "a" * 64, "b" * 64
DOC, APP, SYS = "Practitioner/doc1", "app-a", "app-b"
EVIL = "<script>alert(1)</script>"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute, tzinfo=UTC)


def _doc(action: AuditAction, when: datetime, **kwargs: Any) -> dict[str, Any]:
    return audit_event(action, client_id=APP, user=DOC, role="clinician", recorded=when, **kwargs)


def _events() -> Iterator[dict[str, Any]]:
    for day in range(1, 5):  # the system client's baseline: two reads a day
        for minute in (0, 1):
            yield audit_event(
                AuditAction.READ,
                client_id=SYS,
                role="system",
                patient_keys=[K2],
                resources=["Observation/o1"],
                recorded=at(day, 10, minute),
                outcome_code="200",
            )
    for minute in range(20):  # then a spike
        yield audit_event(
            AuditAction.SEARCH, client_id=SYS, role="system", query="/fhir/Observation", recorded=at(5, 10, minute)
        )
    yield _doc(AuditAction.READ, at(2, 9), patient_keys=[K1], resources=["Patient/p1"], address="10.1.2.3")
    yield _doc(AuditAction.SEARCH, at(3, 14), patient_keys=[K1, K2], resources=["Patient/p1", "Patient/p2"])
    yield _doc(AuditAction.READ, at(3, 15), patient_keys=[K1], outcome=Outcome.MINOR_FAILURE, outcome_code="404")
    yield _doc(AuditAction.CREATE, at(3, 16), patient_keys=[K1], resources=["Observation/o9"])
    yield _doc(AuditAction.BREAK_GLASS, at(4, 11), patient_keys=[K1], outcome_code="200")
    yield _doc(AuditAction.READ, at(4, 11, 5), patient_keys=[K1], resources=["Patient/p1"], purpose_of_use=["BTG"])
    yield _doc(AuditAction.DENIED, at(4, 12), patient_keys=[K2], outcome=Outcome.MINOR_FAILURE, outcome_code="403")
    yield audit_event(
        AuditAction.LOGIN_FAILED, address="10.0.0.9", outcome=Outcome.MINOR_FAILURE, recorded=at(4, 12, 30)
    )
    yield _doc(AuditAction.READ, at(4, 22, 30), patient_keys=[K1], resources=["Patient/p1"])
    evil = audit_event(AuditAction.TOKEN, client_id="evil", recorded=at(6, 9))
    evil["agent"][0]["who"]["identifier"]["value"] = EVIL  # as if a future bug let markup through
    yield evil


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    trail = AuditTrail(SegmentFileSink(root / "audit" / "trail-1"), seed=bytes(32), checkpoint_every=7)
    for event in _events():
        trail.record(event)
    trail.close()
    return root


@pytest.fixture
def events(data_dir: Path) -> list[dict[str, Any]]:
    return list(reports.load_events(data_dir / "audit"))


def _cells(report: reports.Report, *names: str) -> list[tuple[Any, ...]]:
    return [tuple(row[n] for n in names) for row in report.rows]


def test_load_events_streams_every_event_and_filters(data_dir: Path, events: list[dict[str, Any]]) -> None:
    assert len(events) == 8 + 20 + 9 + 1  # checkpoints are not events
    audit = data_dir / "audit"
    assert len(list(reports.load_events(audit / "trail-1"))) == len(events)  # a plain trail dir works too
    assert len(list(reports.load_events(audit, patient_key=K1))) == 7
    assert len(list(reports.load_events(audit, agent=DOC))) == 8
    assert len(list(reports.load_events(audit, agent=APP))) == 8
    assert len(list(reports.load_events(audit, agent=SYS, start=at(5, 0), end=at(5, 10, 10)))) == 10


def test_accounting_of_disclosures_lists_successful_reads_of_that_patient(events: list[dict[str, Any]]) -> None:
    report = reports.disclosures(events, K1)
    assert _cells(report, "recorded", "action", "client_id", "role", "fhir_user", "purpose_of_use") == [
        ("2024-03-02T09:00:00.000Z", "read", APP, "clinician", DOC, ""),
        ("2024-03-03T14:00:00.000Z", "search", APP, "clinician", DOC, ""),
        ("2024-03-04T11:05:00.000Z", "read", APP, "clinician", DOC, "BTG"),
        ("2024-03-04T22:30:00.000Z", "read", APP, "clinician", DOC, ""),
    ]
    assert report.rows[0]["resources"] == "Patient/p1" and report.rows[0]["address"] == "10.1.2.3"
    assert [e["recorded"] for e in report.events] == [r["recorded"] for r in report.rows]
    assert len(reports.disclosures(events, K2).rows) == 9  # the system client's 8 reads and the search
    window = reports.disclosures(events, K1, at(3, 0), at(4, 0))
    assert _cells(window, "action", "resources") == [("search", "Patient/p1 Patient/p2")]


def test_activity_of_one_agent(events: list[dict[str, Any]]) -> None:
    by_user = reports.activity(events, DOC)
    assert [r["action"] for r in by_user.rows] == [
        "read",
        "search",
        "read",
        "create",
        "break-glass",
        "read",
        "denied",
        "read",
    ]
    assert reports.activity(events, APP).rows == by_user.rows
    assert [r["status"] for r in reports.activity(events, DOC, at(3, 15), at(3, 16)).rows] == ["404"]
    assert reports.activity(events, "nobody").rows == []


def test_break_glass_denials(events: list[dict[str, Any]]) -> None:
    assert _cells(reports.break_glass(events), "action", "purpose_of_use", "patient_keys") == [
        ("break-glass", "", K1),
        ("read", "BTG", K1),
    ]
    assert reports.break_glass(events, start=at(4, 11, 1)).rows[0]["action"] == "read"
    assert _cells(reports.denied(events), "action", "outcome", "client_id", "address") == [
        ("denied", "4", APP, ""),
        ("login-failed", "4", "", "10.0.0.9"),
    ]
    assert reports.denied(events, end=at(4, 12, 1)).rows[0]["status"] == "403"


def test_anomalies_flag_volume_after_hours_and_many_patients(events: list[dict[str, Any]]) -> None:
    assert reports.anomalies(events).rows == [
        {
            "kind": "after-hours",
            "agent": DOC,
            "day": "2024-03-04",
            "count": 1,
            "baseline": "",
            "detail": "UTC 20:00-07:00",
        },
        {
            "kind": "volume",
            "agent": SYS,
            "day": "2024-03-05",
            "count": 20,
            "baseline": "2",
            "detail": "more than 5 x median",
        },
    ]
    tight = reports.anomalies(events, distinct_patients=1, volume_factor=20, after_hours=(23, 6))
    assert _cells(tight, "kind", "agent", "day", "count") == [
        ("distinct-patients", DOC, "2024-03-03", 2),
        ("distinct-patients", DOC, "2024-03-04", 2),
    ]
    assert reports.anomalies(events, end=at(5, 0)).rows[0]["kind"] == "after-hours"  # no spike inside the window
    flagged = list(reports.flagged_events(events, reports.anomalies(events).rows))
    assert len(flagged) == 21
    with pytest.raises(AuditReportError):
        reports.anomalies(events, after_hours=(20, 24))


def test_formats(events: list[dict[str, Any]]) -> None:
    rows = reports.denied(events).rows
    table = list(csv.reader(io.StringIO(reports.to_csv(rows))))
    assert table[0][:3] == ["recorded", "action", "outcome"] and len(table) == 3
    assert table[2][1] == "login-failed"
    assert reports.to_csv([]) == ""
    assert json.loads(reports.to_json(rows)) == rows
    bundle = reports.to_fhir_bundle(reports.denied(events).events)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection" and bundle["total"] == 2
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"AuditEvent"}
    page = reports.to_html("Activity of <b>", reports.activity(events, EVIL).rows)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "&lt;script&gt;" in page
    assert "Activity of &lt;b&gt;" in page and "http" not in page.replace("http-equiv", "")
    assert reports.to_csv([{"client_id": "=cmd()"}]).splitlines()[1] == "'=cmd()"


def _run(data_dir: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    parser = argparse.ArgumentParser()
    audit_sub = parser.add_subparsers(dest="command").add_parser("audit").add_subparsers(dest="audit_command")
    audit_reports_cli.register_reports(audit_sub, _add_data_dir)
    args = parser.parse_args(["audit", "report", *argv, "--data-dir", str(data_dir)])
    args.settings_of, args.print = _settings, _print
    capsys.readouterr()
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_cli_prints_each_format(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(
        data_dir,
        capsys,
        "disclosures",
        "--patient-key",
        K1,
        "--from",
        "2024-03-03",
        "--to",
        "2024-03-03",
        "--format",
        "csv",
    )
    assert out.splitlines()[0].startswith("recorded,action") and len(out.splitlines()) == 2
    rows = json.loads(
        _run(data_dir, capsys, "activity", "--agent", DOC, "--from", "2024-03-04T11:00", "--format", "json")
    )
    assert [r["action"] for r in rows] == ["break-glass", "read", "denied", "read"]
    bundle = json.loads(_run(data_dir, capsys, "anomalies", "--format", "fhir"))
    assert bundle["resourceType"] == "Bundle" and bundle["total"] == 21
    page = _run(data_dir, capsys, "break-glass", "--format", "html")
    assert "<table>" in page and page.count("<tr>") == 3
    assert (
        json.loads(_run(data_dir, capsys, "denied", "--to", "2024-03-04T12:15:00+00:00", "--format", "json"))[0][
            "action"
        ]
        == "denied"
    )


def test_cli_refuses_a_report_without_its_subject(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AuditReportError):
        _run(data_dir, capsys, "disclosures", "--format", "csv")
    with pytest.raises(SystemExit):
        _run(data_dir, capsys, "denied", "--from", "yesterday")


def test_times_are_utc() -> None:
    assert audit_reports_cli.parse_time("2024-03-04") == at(4, 0)
    assert audit_reports_cli.parse_time("2024-03-04", end=True) == at(5, 0)
    assert audit_reports_cli.parse_time("2024-03-04T10:00") == at(4, 10)
    assert audit_reports_cli.parse_time("2024-03-04T12:00:00+02:00") == at(4, 10)
    assert at(4, 10) - audit_reports_cli.parse_time("2024-03-04T09:00Z") == timedelta(hours=1)


def test_cli_derives_the_key_of_a_patient_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fhirlake.bootstrap import open_keys
    from security.keys import INDEX_SUBJECT
    from security.pseudonym import Pseudonymizer

    settings = _settings(argparse.Namespace(data_dir=str(tmp_path)))
    keys = open_keys(settings)
    try:
        key = Pseudonymizer(keys.secret(INDEX_SUBJECT), settings.tenant).patient_key("p1")
    finally:
        keys.store.close()
    trail = AuditTrail(SegmentFileSink(tmp_path / "audit" / "trail-1"), seed=bytes(32))
    trail.record(_doc(AuditAction.READ, at(2, 9), patient_keys=[key], resources=["Patient/p1"]))
    trail.close()
    rows = json.loads(_run(tmp_path, capsys, "disclosures", "--patient", "p1", "--format", "json"))
    assert [(r["patient_keys"], r["resources"]) for r in rows] == [(key, "Patient/p1")]
