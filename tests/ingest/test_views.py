"""SQL on FHIR views over a real installation: Synthea bundles posted through the app, rows checked
against values computed from the bundle JSON, hot (journal) and cold (lake) bodies, deletes,
erasure, the CLI end to end with its audit record, and PHI columns refused, dropped or masked."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from audit.reports import action, client_id, load_events
from fhirlake import cli
from fhirlake.bootstrap import open_sealer
from ingest.views import ViewRunner, Visibility, phi_columns, phi_filters
from lake.views import ViewPlan
from tests.fixtures.app import container_of, flush_lake, make_settings, open_client
from tests.fixtures.data import synthea_paths

OBSERVATIONS = {
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "code", "path": "code.coding.first().code", "type": "code"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).unit", "type": "string"},
            ]
        }
    ],
}
PATIENT_NAMES = {
    "resource": "Patient",
    "select": [
        {"column": [{"name": "id", "path": "id"}, {"name": "gender", "path": "gender"}]},
        {"forEach": "name", "column": [{"name": "family", "path": "family"}]},
    ],
}


def _smallest(n: int) -> list[Path]:
    return sorted(synthea_paths(), key=lambda p: p.stat().st_size)[:n]


def _post(client: TestClient, path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The bundle as sent and its fullUrl -> ``Type/id`` map as the server assigned them."""
    bundle = orjson.loads(path.read_bytes())
    reply = client.post("/fhir", content=path.read_bytes())
    assert reply.status_code == 200, reply.text
    urls = {}
    for sent, got in zip(bundle["entry"], reply.json()["entry"], strict=True):
        rtype, rid = got["response"]["location"].split("/")[:2]
        urls[sent["fullUrl"]] = f"{rtype}/{rid}"
    return bundle, urls


def _expected_observations(bundle: dict[str, Any], urls: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] != "Observation":
            continue
        quantity = res.get("valueQuantity", {})
        rows.append(
            {
                "id": urls[entry["fullUrl"]],
                "patient": urls[res["subject"]["reference"]],
                "code": res["code"]["coding"][0]["code"],
                "value": quantity.get("value"),
                "unit": quantity.get("unit"),
            }
        )
    return sorted(rows, key=lambda r: r["id"])


def _runner(client: TestClient, chunk: int = 7) -> ViewRunner:
    container = container_of(client)
    sealer = open_sealer(container.settings, container.keys)
    return ViewRunner(container.journal, container.catalog, sealer, chunk=chunk)


def _rows(runner: ViewRunner, view: dict[str, Any]) -> list[dict[str, Any]]:
    plan = ViewPlan(view)
    out: list[dict[str, Any]] = []
    for batch in plan.batches(runner.resources(plan.resource_type), batch_rows=5):
        assert batch.num_rows <= 5
        out.extend(batch.to_pylist())
    return sorted(out, key=lambda r: str(r.get("id")))


@pytest.fixture
def posted(client: TestClient) -> Iterator[tuple[TestClient, list[tuple[dict[str, Any], dict[str, str]]]]]:
    yield client, [_post(client, p) for p in _smallest(2)]


def test_rows_match_the_bundles_from_the_journal(posted: Any) -> None:
    client, bundles = posted
    expected = sorted(
        (row for bundle, urls in bundles for row in _expected_observations(bundle, urls)), key=lambda r: r["id"]
    )
    assert len(expected) > 30
    assert _rows(_runner(client), OBSERVATIONS) == expected


def test_rows_come_from_the_lake_once_the_journal_is_pruned(tmp_path: Path) -> None:
    with open_client(make_settings(tmp_path / "data", hot_retention_s=0)) as client:
        bundle, urls = _post(client, _smallest(1)[0])
        flush_lake(client)
        journal = container_of(client).journal
        assert journal.reader().execute("SELECT COUNT(*) FROM versions WHERE body IS NOT NULL").fetchone()[0] == 0
        assert _rows(_runner(client), OBSERVATIONS) == _expected_observations(bundle, urls)


def test_a_run_reads_the_lake_and_the_journal_tail_each_resource_once(client: TestClient) -> None:
    first, second = _smallest(2)
    bundle_a, urls_a = _post(client, first)
    flush_lake(client)
    container_of(client).lake_writer.stop(drain=False)  # what follows stays in the journal only
    bundle_b, urls_b = _post(client, second)
    expected_a = _expected_observations(bundle_a, urls_a)
    updated, deleted = [r for r in expected_a if r["value"] is not None][:2]
    body = client.get(f"/fhir/{updated['id']}").json()
    body["valueQuantity"]["value"] = 123.5
    assert client.put(f"/fhir/{updated['id']}", content=orjson.dumps(body)).status_code == 200
    assert client.delete(f"/fhir/{deleted['id']}").status_code in (200, 204)
    journal = container_of(client).journal
    assert journal.committed_seq() < journal.last_seq()
    expected = [
        {**r, "value": 123.5} if r["id"] == updated["id"] else r for r in expected_a if r["id"] != deleted["id"]
    ]
    expected = sorted(expected + _expected_observations(bundle_b, urls_b), key=lambda r: r["id"])
    assert _rows(_runner(client), OBSERVATIONS) == expected


def _hide_values(body: bytes) -> bytes:
    resource = orjson.loads(body)
    resource.pop("valueQuantity", None)
    return orjson.dumps(resource)


def _visible_run(runner: ViewRunner, key: str) -> tuple[list[dict[str, Any]], list[tuple[str, str, str | None]]]:
    disclosed: list[tuple[str, str, str | None]] = []

    def account(rtype: str, rid: str, patient_key: str | None) -> None:
        disclosed.append((rtype, rid, patient_key))

    plan = ViewPlan(OBSERVATIONS)
    seen = Visibility("c.patient_key = ?", (key,), _hide_values, account)
    rows = [r for b in plan.batches(runner.resources("Observation", seen)) for r in b.to_pylist()]
    return sorted(rows, key=lambda r: r["id"]), disclosed


def test_visibility_limits_presents_and_accounts_each_resource(client: TestClient) -> None:
    first, second = _smallest(2)
    bundle_a, urls_a = _post(client, first)
    flush_lake(client)
    container_of(client).lake_writer.stop(drain=False)  # A from the lake, B from the journal
    bundle_b, urls_b = _post(client, second)
    journal = container_of(client).journal
    runner = _runner(client)
    for bundle, urls in ((bundle_a, urls_a), (bundle_b, urls_b)):
        patient = next(v for v in urls.values() if v.startswith("Patient/")).split("/")[1]
        current = journal.current("Patient", patient)
        assert current is not None and current.patient_key is not None
        rows, disclosed = _visible_run(runner, current.patient_key)
        expected = [{**r, "value": None, "unit": None} for r in _expected_observations(bundle, urls)]
        assert rows == expected
        assert sorted(f"Observation/{d[1]}" for d in disclosed) == [r["id"] for r in expected]
        assert {d[2] for d in disclosed} == {current.patient_key}


def test_deleted_and_erased_resources_are_left_out(posted: Any) -> None:
    client, bundles = posted
    (_first, first_urls), (second, second_urls) = bundles
    gone = _expected_observations(second, second_urls)[0]["id"]
    assert client.delete(f"/fhir/{gone}").status_code in (200, 204)
    erased_patient = next(v for v in first_urls.values() if v.startswith("Patient/"))
    container_of(client).erasure.erase(erased_patient.split("/")[1])
    runner = _runner(client)
    rows = _rows(runner, OBSERVATIONS)
    assert rows == [r for r in _expected_observations(second, second_urls) if r["id"] != gone]
    patients = {f"Patient/{r['id']}" for r in _rows(runner, PATIENT_NAMES)}
    assert patients == {v for v in second_urls.values() if v.startswith("Patient/")}


def test_phi_columns_follow_the_field_policy() -> None:
    assert phi_columns(PATIENT_NAMES) == ["family"]
    assert phi_columns(OBSERVATIONS) == []
    when = {"resource": "Observation", "select": [{"column": [{"name": "t", "path": "effective.ofType(dateTime)"}]}]}
    assert phi_columns(when) == ["t"]  # effectiveDateTime is PHI for Observation
    whole = {"resource": "Patient", "select": [{"column": [{"name": "all", "path": "$this"}]}]}
    assert phi_columns(whole) == ["all"]
    by_name = {
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id"}]}],
        "where": [{"path": "name.where(family = 'X').exists()"}],
    }
    assert phi_columns(by_name) == [] and phi_filters(by_name) == ["name"]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | str]:
    capsys.readouterr()  # the app's log lines so far
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err)


def test_cli_runs_a_view_end_to_end_and_is_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    with open_client(make_settings(data)) as client:
        bundle, urls = _post(client, _smallest(1)[0])
        flush_lake(client)
    view_file = tmp_path / "obs.json"
    view_file.write_text(json.dumps(OBSERVATIONS))
    expected = _expected_observations(bundle, urls)
    outputs = {}
    for fmt in ("parquet", "csv", "ndjson"):
        out = tmp_path / f"obs.{fmt}"
        code, report = _cli(
            capsys, "views", "run", str(view_file), "--format", fmt, "--out", str(out), "--data-dir", str(data)
        )
        assert code == 0 and isinstance(report, dict)
        assert report["rows"] == len(expected) and report["phi_columns"] == []
        assert out.stat().st_mode & 0o077 == 0  # owner-only: rows may be PHI
        outputs[fmt] = out
    assert sorted(pq.read_table(outputs["parquet"]).to_pylist(), key=lambda r: r["id"]) == expected
    ndjson = [json.loads(line) for line in outputs["ndjson"].read_text().splitlines()]
    assert sorted(ndjson, key=lambda r: r["id"]) == expected
    with outputs["csv"].open() as handle:
        assert sorted(r["id"] for r in csv.DictReader(handle)) == [r["id"] for r in expected]
    exports = [e for e in load_events(data / "audit") if action(e) == "export"]
    assert len(exports) == 3 and all(client_id(e).startswith("cli:") for e in exports)


def test_cli_refuses_drops_or_masks_phi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    with open_client(make_settings(data)) as client:
        bundle, urls = _post(client, _smallest(1)[0])
    family = next(
        e["resource"]["name"][0]["family"]
        for e in bundle["entry"]
        if e["fullUrl"] in urls and e["resource"]["resourceType"] == "Patient"
    )
    view_file = tmp_path / "names.json"
    view_file.write_text(json.dumps(PATIENT_NAMES))
    out = tmp_path / "names.ndjson"
    base = ("views", "run", str(view_file), "--format", "ndjson", "--out", str(out), "--data-dir", str(data))
    code, err = _cli(capsys, *base)
    assert code == 2 and "family" in str(err) and family not in str(err) and not out.exists()
    code, report = _cli(capsys, *base, "--phi", "drop")
    assert code == 0 and isinstance(report, dict) and report["columns"] == ["id", "gender"]
    assert family not in out.read_text()
    code, report = _cli(capsys, *base, "--phi", "mask")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0 and rows and all(r["family"] is None for r in rows)
    code, report = _cli(capsys, *base, "--phi", "allow")
    assert code == 0 and family in out.read_text()
    assert [action(e) for e in load_events(data / "audit") if client_id(e).startswith("cli:")] == ["export"] * 4
