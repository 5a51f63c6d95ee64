"""``Patient/{id}/$everything`` and ``_history``, against Synthea patients and crafted versions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from security.principal import Role
from tests.fixtures.app import TOKEN_URL, container_of, flush_lake, make_settings, open_client
from tests.fixtures.data import synthea_paths
from tests.fixtures.identity import login, register

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, list[dict[str, str]]]]:
    """Two Synthea patients; for each, the ``Type/id`` of every resource of its bundle by fullUrl."""
    maps = []
    with open_client(make_settings(tmp_path_factory.mktemp("everything") / "data")) as client:
        for path in synthea_paths()[:2]:
            bundle = orjson.loads(path.read_bytes())
            reply = client.post("/fhir", content=path.read_bytes()).json()
            maps.append(
                {
                    sent["fullUrl"]: got["response"]["location"].split("/_history")[0]
                    for sent, got in zip(bundle["entry"], reply["entry"], strict=True)
                }
            )
        yield client, maps


def _compartment(path_index: int, refs: dict[str, str]) -> set[str]:
    """Independently: the bundle's Patient and every resource whose subject/patient is that patient."""
    bundle = orjson.loads(synthea_paths()[path_index].read_bytes())
    patient_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    out = {refs[patient_url]}
    for entry in bundle["entry"]:
        res = entry["resource"]
        for element in ("subject", "patient", "beneficiary"):
            if isinstance(res.get(element), dict) and res[element].get("reference") == patient_url:
                out.add(refs[entry["fullUrl"]])
    return out


def _all_pages(client: TestClient, url: str, headers: dict[str, str] | None = None) -> tuple[list[str], list[Doc]]:
    refs: list[str] = []
    pages = []
    next_url: str | None = url
    while next_url:
        reply = client.get(next_url, headers=headers)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        pages.append(page)
        refs += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page["entry"] if "resource" in e]
        link = next((x["url"] for x in page["link"] if x["relation"] == "next"), None)
        next_url = link.removeprefix("http://testserver") if link else None
    return refs, pages


def _patient_id(refs: dict[str, str]) -> str:
    return next(r for r in refs.values() if r.startswith("Patient/")).split("/")[1]


def test_everything_returns_exactly_the_compartment_patient_first(two: tuple[TestClient, list[dict[str, str]]]) -> None:
    client, maps = two
    pid = _patient_id(maps[0])
    refs, pages = _all_pages(client, f"/fhir/Patient/{pid}/$everything?_count=17")
    assert refs[0] == f"Patient/{pid}"
    assert len(refs) == len(set(refs)) and set(refs) == _compartment(0, maps[0])
    assert pages[0]["total"] == len(refs) and len(pages) > 1
    assert not set(refs) & _compartment(1, maps[1])


def test_everything_filters_by_type_and_since(two: tuple[TestClient, list[dict[str, str]]]) -> None:
    client, maps = two
    pid = _patient_id(maps[0])
    refs, _ = _all_pages(client, f"/fhir/Patient/{pid}/$everything?_type=Condition,Encounter&_count=500")
    assert set(refs) == {r for r in _compartment(0, maps[0]) if r.startswith(("Condition/", "Encounter/"))}
    later, _ = _all_pages(client, f"/fhir/Patient/{pid}/$everything?_since=2999-01-01")
    assert later == []


def test_everything_hides_a_patient_the_caller_may_not_see(two: tuple[TestClient, list[dict[str, str]]]) -> None:
    client, maps = two
    data_dir = container_of(client).settings.data_dir
    own, other = _patient_id(maps[0]), _patient_id(maps[1])
    app = login(client, register(data_dir, Role.PATIENT_APP, "patient/*.rs", patient=own), TOKEN_URL).headers()
    refs, _ = _all_pages(client, f"/fhir/Patient/{own}/$everything?_count=500", headers=app)
    assert set(refs) == _compartment(0, maps[0])
    assert client.get(f"/fhir/Patient/{other}/$everything", headers=app).status_code == 404
    assert client.get("/fhir/Patient/no-such-patient/$everything").status_code == 404


def test_instance_history_lists_every_version_newest_first(two: tuple[TestClient, list[dict[str, str]]]) -> None:
    client, _ = two
    doc = {"resourceType": "Organization", "name": "History Clinic"}
    rid = client.post("/fhir/Organization", content=orjson.dumps(doc)).json()["id"]
    updated = {**doc, "id": rid, "name": "History Clinic East"}
    assert client.put(f"/fhir/Organization/{rid}", content=orjson.dumps(updated)).status_code == 200
    flush_lake(client)  # older versions come back from the lake as well as from the journal
    assert client.delete(f"/fhir/Organization/{rid}").status_code == 204
    history = client.get(f"/fhir/Organization/{rid}/_history").json()
    assert history["type"] == "history" and history["total"] == 3
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]
    assert [e["resource"]["name"] for e in history["entry"][1:]] == ["History Clinic East", "History Clinic"]
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']


def test_type_history_pages_and_since(two: tuple[TestClient, list[dict[str, str]]]) -> None:
    client, maps = two
    refs, pages = _all_pages(client, "/fhir/Condition/_history?_count=4")
    conditions = {r for m in maps for r in m.values() if r.startswith("Condition/")}
    assert set(refs) == conditions and len(refs) == len(conditions) == pages[0]["total"]
    assert client.get("/fhir/Condition/_history?_since=2999-01-01").json()["total"] == 0
    assert client.get("/fhir/Condition/_history?code=x").status_code == 400
