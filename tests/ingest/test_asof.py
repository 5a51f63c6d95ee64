"""``_asOf``: reads, searches and ``$everything`` as they stood at an instant; legal holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhirlake import cli
from lake.schema import table_for
from tests.fixtures.app import container_of, flush_lake, make_settings, open_client


def _now() -> str:
    time.sleep(0.02)  # instants strictly between the writes
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    time.sleep(0.02)
    return stamp.replace("+00:00", "Z")


def _obs(pid: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A patient and an observation through create, update and delete, with an instant after each step."""
    with open_client(make_settings(tmp_path_factory.mktemp("asof") / "data")) as client:
        t: dict[str, str] = {"before": _now()}
        pid = client.post(
            "/fhir/Patient", content=orjson.dumps({"resourceType": "Patient", "gender": "female"})
        ).json()["id"]
        oid = client.post("/fhir/Observation", content=orjson.dumps(_obs(pid, "preliminary"))).json()["id"]
        flush_lake(client)
        t["created"] = _now()
        patient = {"resourceType": "Patient", "id": pid, "gender": "male"}
        assert client.put(f"/fhir/Patient/{pid}", content=orjson.dumps(patient)).status_code == 200
        assert (
            client.put(f"/fhir/Observation/{oid}", content=orjson.dumps({**_obs(pid, "final"), "id": oid})).status_code
            == 200
        )
        flush_lake(client)
        t["updated"] = _now()
        assert client.delete(f"/fhir/Observation/{oid}").status_code == 204
        flush_lake(client)
        t["deleted"] = _now()
        patient["gender"] = "other"  # accepted, not yet in the lake: the journal answers for it
        assert client.put(f"/fhir/Patient/{pid}", content=orjson.dumps(patient)).status_code == 200
        t["unflushed"] = _now()
        t |= {"pid": pid, "oid": oid}
        yield client, t


def test_read_as_of_returns_the_state_of_each_instant(timeline: tuple[TestClient, dict[str, str]]) -> None:
    client, t = timeline
    pid, oid = t["pid"], t["oid"]

    def read(path: str, at: str) -> Any:
        return client.get(f"/fhir/{path}", params={"_asOf": t[at]})

    assert read(f"Patient/{pid}", "before").status_code == 404
    genders = {at: read(f"Patient/{pid}", at).json()["gender"] for at in ("created", "updated", "deleted", "unflushed")}
    assert genders == {"created": "female", "updated": "male", "deleted": "male", "unflushed": "other"}
    assert read(f"Observation/{oid}", "created").json()["status"] == "preliminary"
    assert read(f"Observation/{oid}", "updated").json()["status"] == "final"
    assert read(f"Observation/{oid}", "deleted").status_code == 410
    assert client.get(f"/fhir/Observation/{oid}").status_code == 410
    reply = read(f"Patient/{pid}", "created")
    assert reply.headers["ETag"] == 'W/"1"'
    assert reply.headers["Fhirlake-Snapshot"].startswith(f"{table_for('Patient')}=")


def test_snapshot_named_is_the_one_current_at_the_instant(timeline: tuple[TestClient, dict[str, str]]) -> None:
    client, t = timeline
    table = container_of(client).catalog.table(table_for("Patient"), fresh=True)
    at_ms = int(datetime.fromisoformat(t["created"].replace("Z", "+00:00")).timestamp() * 1000)
    expected = max((s for s in table.snapshots() if s.timestamp_ms <= at_ms), key=lambda s: s.timestamp_ms)
    header = client.get(f"/fhir/Patient/{t['pid']}", params={"_asOf": t["created"]}).headers["Fhirlake-Snapshot"]
    assert header == f"{table_for('Patient')}={expected.snapshot_id}"


def test_everything_and_search_as_of(timeline: tuple[TestClient, dict[str, str]]) -> None:
    client, t = timeline
    pid = t["pid"]

    def everything(at: str) -> list[tuple[str, str]]:
        bundle = client.get(f"/fhir/Patient/{pid}/$everything", params={"_asOf": t[at]}).json()
        assert any(tag["system"] == "urn:fhirlake:as-of-snapshot" for tag in bundle["meta"]["tag"])
        return [
            (e["resource"]["resourceType"], e["resource"].get("status", e["resource"].get("gender")))
            for e in bundle["entry"]
        ]

    assert everything("created") == [("Patient", "female"), ("Observation", "preliminary")]
    assert everything("updated") == [("Patient", "male"), ("Observation", "final")]
    assert everything("deleted") == [("Patient", "male")]
    found = client.get("/fhir/Observation", params={"patient": pid, "_asOf": t["updated"]}).json()
    assert [e["resource"]["status"] for e in found["entry"]] == ["final"]
    found = client.get("/fhir/Observation", params={"_id": t["oid"], "_asOf": t["created"]}).json()
    assert [e["resource"]["status"] for e in found["entry"]] == ["preliminary"]
    refused = client.get("/fhir/Observation", params={"code": "8867-4", "_asOf": t["updated"]})
    assert refused.status_code == 400  # an as-of search is anchored on a patient or ids

    def statuses(at: str, **criteria: str) -> list[str]:
        query = {"patient": pid, "_asOf": t[at], **criteria}
        return [e["resource"]["status"] for e in client.get("/fhir/Observation", params=query).json()["entry"]]

    assert statuses("created", status="preliminary") == ["preliminary"]
    assert statuses("updated", status="preliminary") == []  # it was final by then
    assert statuses("updated", code="http://loinc.org|8867-4", status="final") == ["final"]
    assert statuses("updated", code="http://loinc.org|0000-0") == []
    assert statuses("created", **{"code:missing": "false"}) == ["preliminary"]
    genders = client.get("/fhir/Patient", params={"_id": pid, "gender": "female", "_asOf": t["created"]}).json()
    assert [e["resource"]["gender"] for e in genders["entry"]] == ["female"]
    assert (
        client.get("/fhir/Patient", params={"_id": pid, "gender": "female", "_asOf": t["updated"]}).json()["total"] == 0
    )
    assert client.get(f"/fhir/Patient/{pid}", params={"_asOf": "yesterday"}).status_code == 400


def test_legal_hold_keeps_the_snapshot_through_expiry(
    timeline: tuple[TestClient, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = timeline
    container = container_of(client)
    data_dir = str(container.settings.data_dir)
    flush_lake(client)
    table = container.catalog.table(table_for("Patient"), fresh=True)
    held_id = table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    assert cli.main(["lake", "hold", "--name", "case-42", "--data-dir", data_dir]) == 0
    assert cli.main(["lake", "hold", "--name", "case-42", "--data-dir", data_dir]) == 2  # exists already
    assert cli.main(["lake", "hold", "--name", "bad name!", "--data-dir", data_dir]) == 2
    assert cli.main(["lake", "maintain", "--retention", "0", "--data-dir", data_dir]) == 0
    table = container.catalog.table(table_for("Patient"), fresh=True)
    assert held_id in {s.snapshot_id for s in table.snapshots()}
    capsys.readouterr()
    assert cli.main(["lake", "hold", "--list", "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert orjson.loads(out[out.index('{\n  "holds"') :])["holds"]["case-42"][table_for("Patient")] == held_id
    assert cli.main(["lake", "hold", "--name", "case-42", "--release", "--data-dir", data_dir]) == 0
    assert cli.main(["lake", "maintain", "--retention", "0", "--data-dir", data_dir]) == 0
    table = container.catalog.table(table_for("Patient"), fresh=True)
    assert [s.snapshot_id for s in table.snapshots()] == [table.current_snapshot().snapshot_id]  # type: ignore[union-attr]
