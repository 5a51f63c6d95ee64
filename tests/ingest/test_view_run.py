"""``POST /fhir/ViewDefinition/$run``: rows of what the caller may see; no identifiers for researchers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from security.principal import Role
from tests.fixtures.app import TOKEN_URL, container_of, make_settings, open_client
from tests.fixtures.data import synthea_paths
from tests.fixtures.identity import login, register

VIEW = {
    "resourceType": "ViewDefinition",
    "resource": "Patient",
    "status": "active",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "gender", "path": "gender"},
                {"name": "family", "path": "name.first().family"},
                {"name": "mrn", "path": "identifier.where(type.coding.code = 'MR').value.first()"},
            ]
        }
    ],
}


def params(view: dict[str, Any], fmt: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "viewResource", "resource": view}, {"name": "_format", "valueCode": fmt}],
        }
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, list[dict[str, Any]]]]:
    with open_client(make_settings(tmp_path_factory.mktemp("run") / "data")) as client:
        patients = []
        for path in synthea_paths()[:3]:
            reply = client.post("/fhir", content=path.read_bytes()).json()
            pid = next(
                e["response"]["location"].split("/")[1]
                for e in reply["entry"]
                if e["response"]["location"].startswith("Patient/")
            )
            patients.append(client.get(f"/fhir/Patient/{pid}").json())
        yield client, patients


def _expected(patient: dict[str, Any]) -> dict[str, Any]:
    mrn = next(
        i["value"] for i in patient["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR"
    )
    return {
        "id": f"Patient/{patient['id']}",
        "gender": patient["gender"],
        "family": patient["name"][0]["family"],
        "mrn": mrn,
    }


def test_run_returns_the_rows_of_every_visible_patient(lake: tuple[TestClient, list[dict[str, Any]]]) -> None:
    client, patients = lake
    reply = client.post("/fhir/ViewDefinition/$run", content=params(VIEW, "json"))
    assert reply.status_code == 200, reply.text
    assert sorted(reply.json(), key=lambda r: r["id"]) == sorted(
        (_expected(p) for p in patients), key=lambda r: r["id"]
    )
    as_csv = client.post("/fhir/ViewDefinition/$run?_format=csv", content=orjson.dumps(VIEW))
    assert len(list(csv.DictReader(io.StringIO(as_csv.text)))) == len(patients)
    as_parquet = client.post("/fhir/ViewDefinition/$run", content=params(VIEW, "parquet"))
    assert pq.read_table(io.BytesIO(as_parquet.content)).num_rows == len(patients)


def test_researcher_rows_carry_no_identifiers(lake: tuple[TestClient, list[dict[str, Any]]]) -> None:
    client, patients = lake
    data_dir = container_of(client).settings.data_dir
    researcher = login(client, register(data_dir, Role.RESEARCHER, "system/*.rs"), TOKEN_URL).headers()
    reply = client.post("/fhir/ViewDefinition/$run", content=params(VIEW, "ndjson"), headers=researcher)
    assert reply.status_code == 200, reply.text
    rows = [orjson.loads(line) for line in reply.content.splitlines()]
    assert len(rows) == len(patients) and all(r["family"] is None and r["mrn"] is None for r in rows)
    assert {r["gender"] for r in rows} == {p["gender"] for p in patients}
    for patient in patients:
        assert patient["name"][0]["family"].encode() not in reply.content
        assert _expected(patient)["mrn"].encode() not in reply.content


def test_patient_app_sees_only_its_own_row(lake: tuple[TestClient, list[dict[str, Any]]]) -> None:
    client, patients = lake
    data_dir = container_of(client).settings.data_dir
    own = patients[1]["id"]
    app = login(client, register(data_dir, Role.PATIENT_APP, "patient/*.rs", patient=own), TOKEN_URL).headers()
    rows = client.post("/fhir/ViewDefinition/$run", content=params(VIEW, "json"), headers=app).json()
    assert [r["id"] for r in rows] == [f"Patient/{own}"]


def test_bad_views_are_400_and_name_no_value(lake: tuple[TestClient, list[dict[str, Any]]]) -> None:
    client, _ = lake
    broken = {**VIEW, "select": [{"column": [{"name": "x", "path": "name.nosuchfunction()"}]}]}
    reply = client.post("/fhir/ViewDefinition/$run", content=params(broken, "json"))
    assert reply.status_code == 400 and reply.json()["resourceType"] == "OperationOutcome"
    assert client.post("/fhir/ViewDefinition/$run", content=b'{"resourceType":"Patient"}').status_code == 400
    assert client.post("/fhir/ViewDefinition/$run?_format=xml", content=orjson.dumps(VIEW)).status_code == 400
