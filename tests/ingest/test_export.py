"""Bulk Data ``$export``: exactly what the caller may see, each resource once, sealed at rest, owner only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from security.principal import Role
from tests.fixtures.app import TOKEN_URL, container_of, flush_lake, make_settings, open_client
from tests.fixtures.data import synthea_paths
from tests.fixtures.identity import login, register

ASYNC = {"Prefer": "respond-async"}
Lake = tuple[TestClient, dict[str, dict[str, int]], list[str]]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Three Synthea patients (two in the lake, one only in the journal), an update and a delete.

    Yields the client, the expected live resources as type -> id -> version, and the patient ids.
    """
    with open_client(make_settings(tmp_path_factory.mktemp("export") / "data")) as client:
        live: dict[str, dict[str, int]] = {}
        patients = []
        for n, path in enumerate(synthea_paths()[:3]):
            reply = client.post("/fhir", content=path.read_bytes()).json()
            for entry in reply["entry"]:
                rtype, rid, _, version = entry["response"]["location"].split("/")
                live.setdefault(rtype, {})[rid] = int(version)
                if rtype == "Patient":
                    patients.append(rid)
            if n == 1:
                flush_lake(client)  # the third patient stays in the journal only
        org = next(iter(live["Organization"]))
        changed = client.get(f"/fhir/Organization/{org}").json() | {"name": "Renamed Clinic"}
        assert client.put(f"/fhir/Organization/{org}", content=orjson.dumps(changed)).status_code == 200
        live["Organization"][org] += 1
        gone = next(iter(live["Claim"]))
        assert client.delete(f"/fhir/Claim/{gone}").status_code == 204
        del live["Claim"][gone]
        yield client, live, patients


def run_export(client: TestClient, url: str, headers: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    kick = client.get(url, headers={**ASYNC, **(headers or {})})
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["Content-Location"].removeprefix("http://testserver")
    for _ in range(300):
        reply = client.get(status_url, headers=headers)
        if reply.status_code == 200:
            return status_url, reply.json()
        assert reply.status_code == 202, reply.text
        time.sleep(0.05)
    raise AssertionError("export did not finish")


def download(
    client: TestClient, manifest: dict[str, Any], headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    docs = []
    for output in manifest["output"]:
        reply = client.get(output["url"].removeprefix("http://testserver"), headers=headers)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in reply.content.splitlines() if line]
        assert len(lines) == output["count"] and {d["resourceType"] for d in lines} == {output["type"]}
        docs += lines
    return docs


def test_system_export_holds_every_live_resource_once_at_its_current_version(lake: Lake) -> None:
    client, live, _ = lake
    _, manifest = run_export(client, "/fhir/$export")
    docs = download(client, manifest)
    got = [(d["resourceType"], d["id"], int(d["meta"]["versionId"])) for d in docs]
    expected = [(t, i, v) for t, ids in live.items() for i, v in ids.items()]
    assert len(got) == len(set(got)) and sorted(got) == sorted(expected)
    assert any(d.get("name") == "Renamed Clinic" for d in docs)


def test_type_since_and_type_filter(lake: Lake) -> None:
    client, live, _ = lake
    query = "_type=Observation,Condition&_typeFilter=Observation%3Fcategory%3Dvital-signs"
    _, manifest = run_export(client, f"/fhir/$export?{query}")
    docs = download(client, manifest)
    observations = [d for d in docs if d["resourceType"] == "Observation"]
    assert observations and all(
        any(c["code"] == "vital-signs" for cat in d["category"] for c in cat["coding"]) for d in observations
    )
    assert {d["id"] for d in docs if d["resourceType"] == "Condition"} == set(live["Condition"])
    _, later = run_export(client, "/fhir/$export?_since=2999-01-01")
    assert later["output"] == []


def test_patient_app_exports_only_its_own_compartment(lake: Lake) -> None:
    client, _, patients = lake
    data_dir = container_of(client).settings.data_dir
    app = login(client, register(data_dir, Role.PATIENT_APP, "patient/*.rs", patient=patients[0]), TOKEN_URL).headers()
    _, manifest = run_export(client, "/fhir/Patient/$export", app)
    docs = download(client, manifest, app)
    ours = client.get(f"/fhir/Patient/{patients[0]}/$everything?_count=1000").json()
    assert sorted((d["resourceType"], d["id"]) for d in docs) == sorted(
        (e["resource"]["resourceType"], e["resource"]["id"]) for e in ours["entry"]
    )


def test_group_export_holds_the_members_only(lake: Lake) -> None:
    client, _, patients = lake
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{patients[2]}"}}],
    }
    gid = client.post("/fhir/Group", content=orjson.dumps(group)).json()["id"]
    _, manifest = run_export(client, f"/fhir/Group/{gid}/$export?_type=Patient,Encounter")
    docs = download(client, manifest)
    assert [d["id"] for d in docs if d["resourceType"] == "Patient"] == [patients[2]]
    assert all(d["subject"]["reference"] == f"Patient/{patients[2]}" for d in docs if d["resourceType"] == "Encounter")


def test_files_are_sealed_at_rest_and_only_the_caller_reads_them(lake: Lake) -> None:
    client, _, patients = lake
    status_url, manifest = run_export(client, "/fhir/$export?_type=Patient")
    job = status_url.rsplit("/", 1)[1]
    raw = (container_of(client).settings.data_dir / "exports" / job / "Patient.ndjson").read_bytes()
    family = client.get(f"/fhir/Patient/{patients[0]}").json()["name"][0]["family"]
    assert family.encode() not in raw and patients[0].encode() not in raw and b"Patient" not in raw
    data_dir = container_of(client).settings.data_dir
    other = login(client, register(data_dir, Role.EMR_INTEGRATION, "system/*.rs"), TOKEN_URL).headers()
    assert client.get(status_url, headers=other).status_code == 404
    assert client.get(manifest["output"][0]["url"].removeprefix("http://testserver"), headers=other).status_code == 404
    assert client.delete(status_url).status_code == 202
    assert client.get(status_url).status_code == 404
    assert not (data_dir / "exports" / job).exists()


def test_kick_off_needs_respond_async_and_known_parameters(lake: Lake) -> None:
    client, _, _ = lake
    assert client.get("/fhir/$export").status_code == 400
    assert client.get("/fhir/$export?_elements=id", headers=ASYNC).status_code == 400
    assert client.get("/fhir/$export?_type=NoSuchType", headers=ASYNC).status_code == 400
    assert client.get("/fhir/Patient/$export?_type=Organization", headers=ASYNC).status_code == 400
