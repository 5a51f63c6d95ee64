"""The RESTful interactions of FHIR R4 (create, update, read, vread, delete, search) as a client sees them."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.gateway.support import (
    body,
    lake_rows,
    observation,
    patient,
    post_entry,
    rejected,
    transaction,
    versions_count,
)

BASE = "http://testserver/fhir"
MRN = "http://hospital.example.org/mrn"


def _create(client: TestClient, doc: dict[str, Any], **headers: str) -> httpx.Response:
    response = client.post(f"/fhir/{doc['resourceType']}", content=body(doc), headers=headers)
    assert response.status_code == 201, response.text
    return response


def _id_of(response: httpx.Response) -> str:
    return str(response.headers["location"].split("/")[-3])


def _put(client: TestClient, rid: str, doc: dict[str, Any], **headers: str) -> httpx.Response:
    return client.put(f"/fhir/{doc['resourceType']}/{rid}", content=body({**doc, "id": rid}), headers=headers)


def _ids(searchset: dict[str, Any]) -> list[str]:
    return sorted(e["resource"]["id"] for e in searchset["entry"] if e["search"]["mode"] == "match")


# -- create ------------------------------------------------------------------------------------


def test_create_answers_201_with_location_etag_and_meta(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=body(patient(id="client-chosen")))
    assert response.status_code == 201, response.text
    created = response.json()
    rid = created["id"]
    assert rid != "client-chosen"  # create assigns the id
    assert response.headers["location"] == f"{BASE}/Patient/{rid}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert created["meta"]["versionId"] == "1"
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert abs(modified.timestamp() - _instant(created["meta"]["lastUpdated"])) < 1
    assert created["name"] == [{"family": "Doe", "given": ["Jane"]}]


def _instant(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_read_right_after_write_returns_it(client: TestClient) -> None:
    for n in range(5):
        rid = _id_of(_create(client, patient(birthDate=f"198{n}-01-01")))
        got = client.get(f"/fhir/Patient/{rid}")
        assert got.status_code == 200, got.text
        assert got.json()["birthDate"] == f"198{n}-01-01"
        assert got.headers["etag"] == 'W/"1"'
        assert "last-modified" in got.headers


# -- update, versions, If-Match -------------------------------------------------------------------


def test_put_creates_then_updates(client: TestClient) -> None:
    first = _put(client, "p1", patient(gender="female"))
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"{BASE}/Patient/p1/_history/1"
    second = _put(client, "p1", patient(gender="male"))
    assert second.status_code == 200, second.text
    assert second.headers["etag"] == 'W/"2"'
    assert second.headers["location"] == f"{BASE}/Patient/p1/_history/2"
    assert second.json()["meta"]["versionId"] == "2"
    current = client.get("/fhir/Patient/p1")
    assert current.json()["gender"] == "male" and current.headers["etag"] == 'W/"2"'
    old = client.get("/fhir/Patient/p1/_history/1")
    assert old.status_code == 200
    assert old.json()["gender"] == "female" and old.json()["meta"]["versionId"] == "1"
    assert old.headers["etag"] == 'W/"1"'


def test_if_match_guards_concurrent_updates(client: TestClient) -> None:
    assert _put(client, "p2", patient()).status_code == 201
    stale = _put(client, "p2", patient(gender="other"), **{"If-Match": 'W/"7"'})
    rejected(stale, 412, "conflict")
    assert client.get("/fhir/Patient/p2").headers["etag"] == 'W/"1"'
    fresh = _put(client, "p2", patient(gender="other"), **{"If-Match": 'W/"1"'})
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["etag"] == 'W/"2"'
    rejected(_put(client, "missing", patient(), **{"If-Match": 'W/"1"'}), 412, "conflict")
    assert versions_count(client) == 2


def test_unknown_version_is_404(client: TestClient) -> None:
    assert _put(client, "p3", patient()).status_code == 201
    rejected(client.get("/fhir/Patient/p3/_history/2"), 404, "not-found")
    rejected(client.get("/fhir/Patient/p3/_history/x"), 404, "not-found")
    rejected(client.get("/fhir/Patient/nobody"), 404, "not-found")


# -- delete ------------------------------------------------------------------------------------


def test_delete_then_read_is_gone_but_history_remains(client: TestClient) -> None:
    rid = _id_of(_create(client, patient()))
    deleted = client.delete(f"/fhir/Patient/{rid}")
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    rejected(client.get(f"/fhir/Patient/{rid}"), 410, "deleted")
    old = client.get(f"/fhir/Patient/{rid}/_history/1")
    assert old.status_code == 200 and old.json()["id"] == rid
    search = client.get("/fhir/Patient", params={"_id": rid}).json()
    assert search["total"] == 0
    again = client.delete(f"/fhir/Patient/{rid}")
    assert again.status_code == 204
    recreated = _put(client, rid, patient())
    assert recreated.status_code == 201 and recreated.headers["etag"] == 'W/"3"'


def test_delete_of_a_missing_resource_is_a_no_op(client: TestClient) -> None:
    assert client.delete("/fhir/Patient/never-existed").status_code == 204
    assert versions_count(client) == 0


# -- Prefer ------------------------------------------------------------------------------------


def test_prefer_return_minimal_has_no_body(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=body(patient()), headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["location"].endswith("/_history/1")
    assert response.headers["etag"] == 'W/"1"'


def test_prefer_return_operation_outcome(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=body(patient()), headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["severity"] == "information"
    assert response.headers["location"].endswith("/_history/1")


def test_prefer_in_a_transaction(client: TestClient) -> None:
    bundle = body(transaction(post_entry(patient())))
    minimal = client.post("/fhir", content=bundle, headers={"Prefer": "return=minimal"}).json()
    assert "resource" not in minimal["entry"][0]
    assert minimal["entry"][0]["response"]["status"] == "201 Created"
    full = client.post("/fhir", content=bundle).json()
    assert full["entry"][0]["resource"]["resourceType"] == "Patient"


# -- conditional create ------------------------------------------------------------------------


def test_if_none_exist_returns_the_existing_resource(client: TestClient) -> None:
    doc = patient(identifier=[{"system": MRN, "value": "12345"}])
    criteria = {"If-None-Exist": f"identifier={MRN}|12345"}
    first = client.post("/fhir/Patient", content=body(doc), headers=criteria)
    assert first.status_code == 201, first.text
    rid = _id_of(first)
    second = client.post("/fhir/Patient", content=body(doc), headers=criteria)
    assert second.status_code == 200, second.text
    assert second.json()["id"] == rid
    assert second.headers["etag"] == 'W/"1"'
    assert second.headers["location"] == f"{BASE}/Patient/{rid}/_history/1"
    assert versions_count(client) == 1
    other = client.post("/fhir/Patient", content=body(doc), headers={"If-None-Exist": f"identifier={MRN}|99"})
    assert other.status_code == 201


def test_if_none_exist_matching_several_is_412(client: TestClient) -> None:
    doc = patient(identifier=[{"system": MRN, "value": "dup"}])
    _create(client, doc)
    _create(client, doc)
    response = client.post("/fhir/Patient", content=body(doc), headers={"If-None-Exist": f"identifier={MRN}|dup"})
    rejected(response, 412, "multiple-matches")
    assert versions_count(client) == 2


# -- idempotency -------------------------------------------------------------------------------


def _identified_bundle(value: str) -> bytes:
    pat = "urn:uuid:1d3a1f3e-54b0-4b6c-9e0f-2f0f4d7c8a11"
    doc = transaction(post_entry(patient(), pat), post_entry(observation(subject={"reference": pat})))
    doc["identifier"] = {"system": "urn:ietf:rfc:3986", "value": value}
    return body(doc)


def test_same_bundle_identifier_is_stored_once(client: TestClient) -> None:
    raw = _identified_bundle("urn:uuid:6e1b3c8e-0a1c-4f57-a5d4-6b2c1f7e9d20")
    first = client.post("/fhir", content=raw)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    second = client.post("/fhir", content=raw)
    assert second.status_code == 200, second.text
    assert second.headers["idempotent-replayed"] == "true"
    locations = [[e["response"]["location"] for e in r.json()["entry"]] for r in (first, second)]
    assert locations[0] == locations[1]
    resources = [[e["resource"] for e in r.json()["entry"]] for r in (first, second)]
    assert resources[0] == resources[1]  # the replay answers with what was stored, not an empty shell
    assert versions_count(client) == 2
    rows = lake_rows(client)
    assert rows["patient"] == 1 and rows["observation"] == 1


def test_same_bundle_identifier_with_other_content_is_409(client: TestClient) -> None:
    ident = "urn:uuid:0f8e9a7b-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
    assert client.post("/fhir", content=_identified_bundle(ident)).status_code == 200
    doc = transaction(post_entry(patient(gender="female")))
    doc["identifier"] = {"system": "urn:ietf:rfc:3986", "value": ident}
    rejected(client.post("/fhir", content=body(doc)), 409, "conflict")
    assert versions_count(client) == 2


def test_idempotency_key_replays_and_refuses_another_body(client: TestClient) -> None:
    key = {"Idempotency-Key": "c0ffee00-1111-4222-8333-444455556666"}
    raw = body(transaction(post_entry(patient())))
    first = client.post("/fhir", content=raw, headers=key)
    second = client.post("/fhir", content=raw, headers=key)
    assert second.status_code == 200 and second.headers["idempotent-replayed"] == "true"
    assert first.json()["entry"][0]["response"]["location"] == second.json()["entry"][0]["response"]["location"]
    rejected(
        client.post("/fhir", content=body(transaction(post_entry(patient(gender="male")))), headers=key),
        409,
        "conflict",
    )
    assert versions_count(client) == 1


def test_idempotency_key_on_a_rest_create(client: TestClient) -> None:
    key = {"Idempotency-Key": "5f2b7d9e-3a41-4c8e-b6f0-9d1e2c3b4a50"}
    first = client.post("/fhir/Patient", content=body(patient()), headers=key)
    assert first.status_code == 201, first.text
    second = client.post("/fhir/Patient", content=body(patient()), headers=key)
    assert second.status_code == 201, second.text
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    rejected(client.post("/fhir/Patient", content=body(patient(gender="male")), headers=key), 409, "conflict")
    assert versions_count(client) == 1


# -- search ------------------------------------------------------------------------------------


@pytest.fixture
def two_patients(client: TestClient) -> tuple[str, str, list[str]]:
    alice = _id_of(_create(client, patient(identifier=[{"system": MRN, "value": "A-1"}])))
    bob = _id_of(_create(client, patient(identifier=[{"system": MRN, "value": "B-2"}])))
    alice_obs = [_id_of(_create(client, observation(subject={"reference": f"Patient/{alice}"}))) for _ in range(3)]
    _create(client, observation(subject={"reference": f"Patient/{bob}"}))
    return alice, bob, sorted(alice_obs)


def test_search_observations_by_patient(client: TestClient, two_patients: tuple[str, str, list[str]]) -> None:
    alice, _bob, alice_obs = two_patients
    for value in (alice, f"Patient/{alice}"):
        response = client.get("/fhir/Observation", params={"patient": value})
        assert response.status_code == 200
        found = response.json()
        assert found["type"] == "searchset" and found["total"] == 3
        assert _ids(found) == alice_obs
    assert client.get("/fhir/Observation", params={"subject": f"Patient/{alice}"}).json()["total"] == 3


def test_search_patient_by_identifier(client: TestClient, two_patients: tuple[str, str, list[str]]) -> None:
    _alice, bob, _ = two_patients
    found = client.get("/fhir/Patient", params={"identifier": f"{MRN}|B-2"}).json()
    assert _ids(found) == [bob]
    assert client.get("/fhir/Patient", params={"identifier": "B-2"}).json()["total"] == 1
    assert client.get("/fhir/Patient", params={"identifier": "http://other.example.org|B-2"}).json()["total"] == 0


def test_unknown_search_parameter_is_ignored_with_a_warning(
    client: TestClient, two_patients: tuple[str, str, list[str]]
) -> None:
    alice, _bob, _ = two_patients
    response = client.get("/fhir/Patient", params={"identifier": f"{MRN}|A-1", "deceased": "true"})
    assert response.status_code == 200
    found = response.json()
    assert _ids(found) == [alice]
    outcomes = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["issue"][0]["severity"] == "warning"
    assert outcomes[0]["issue"][0]["code"] == "not-supported"
    self_link = next(link["url"] for link in found["link"] if link["relation"] == "self")
    assert "deceased=" not in self_link and "identifier=" in self_link


def test_unknown_search_parameter_is_refused_when_strict(client: TestClient) -> None:
    response = client.get("/fhir/Patient", params={"deceased": "true"}, headers={"Prefer": "handling=strict"})
    rejected(response, 400, "not-supported", "deceased")


# -- references inside a transaction -----------------------------------------------------------


def test_reference_to_a_conditional_create_that_matched_points_at_the_existing_resource(client: TestClient) -> None:
    existing = _id_of(_create(client, patient(identifier=[{"system": MRN, "value": "C-3"}])))
    pat = "urn:uuid:3b0c2a4e-7d7e-4a43-9d0e-8f4a2c1b6e70"
    create = post_entry(patient(identifier=[{"system": MRN, "value": "C-3"}]), pat)
    create["request"]["ifNoneExist"] = f"identifier={MRN}|C-3"
    bundle = transaction(create, post_entry(observation(subject={"reference": pat})))
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    matched, obs = response.json()["entry"]
    assert matched["response"]["status"] == "200 OK"
    assert matched["response"]["location"] == f"Patient/{existing}/_history/1"
    assert obs["resource"]["subject"]["reference"] == f"Patient/{existing}"
    assert client.get("/fhir/Observation", params={"patient": existing}).json()["total"] == 1


def test_conditional_reference_resolves_by_identifier(client: TestClient) -> None:
    existing = _id_of(_create(client, patient(identifier=[{"system": MRN, "value": "D-4"}])))
    bundle = transaction(post_entry(observation(subject={"reference": f"Patient?identifier={MRN}|D-4"})))
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{existing}"
    missing = transaction(post_entry(observation(subject={"reference": f"Patient?identifier={MRN}|nobody"})))
    rejected(
        client.post("/fhir", content=body(missing)), 400, "not-found", "Bundle.entry[0].resource.subject.reference"
    )


def test_search_pages_with_count(client: TestClient, two_patients: tuple[str, str, list[str]]) -> None:
    alice, _bob, alice_obs = two_patients
    page = client.get("/fhir/Observation", params={"patient": alice, "_count": "2"}).json()
    assert page["total"] == 3 and _ids(page) == alice_obs[:2]
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    rest = client.get(next_url).json()
    assert _ids(rest) == alice_obs[2:]
    assert not [link for link in rest["link"] if link["relation"] == "next"]


def test_unsupported_method_is_405_with_an_outcome(client: TestClient) -> None:
    assert _put(client, "p9", patient()).status_code == 201
    response = client.patch("/fhir/Patient/p9", content=b"[]", headers={"Content-Type": "application/json-patch+json"})
    rejected(response, 405, "not-supported")


def test_count_zero_returns_only_the_total(client: TestClient, two_patients: tuple[str, str, list[str]]) -> None:
    alice, _bob, _ = two_patients
    for offset in ("0", "2"):
        page = client.get("/fhir/Observation", params={"patient": alice, "_count": "0", "_offset": offset}).json()
        assert page["total"] == 3 and _ids(page) == []
        assert [link["relation"] for link in page["link"]] == ["self"]  # a next link would loop forever


def test_if_none_exist_accepts_the_type_prefixed_form(client: TestClient) -> None:
    doc = patient(identifier=[{"system": MRN, "value": "E-5"}])
    rid = _id_of(_create(client, doc))
    again = client.post("/fhir/Patient", content=body(doc), headers={"If-None-Exist": f"Patient?identifier={MRN}|E-5"})
    assert again.status_code == 200 and again.json()["id"] == rid
