"""Conditional update with an id in the body (FHIR R4 3.1.0.4.3)."""

from __future__ import annotations

from fastapi.testclient import TestClient

SYSTEM = "http://hospital.example/mrn"


def _patient(mrn: str, rid: str | None = None, family: str = "Doe") -> dict[str, object]:
    body: dict[str, object] = {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": mrn}],
        "name": [{"family": family}],
    }
    if rid is not None:
        body["id"] = rid
    return body


def test_no_match_with_body_id_creates_that_id(client: TestClient) -> None:
    reply = client.put(f"/fhir/Patient?identifier={SYSTEM}|m1", json=_patient("m1", "chosen-id"))
    assert reply.status_code == 201
    assert reply.json()["id"] == "chosen-id"
    assert client.get("/fhir/Patient/chosen-id").status_code == 200


def test_one_match_with_same_id_updates(client: TestClient) -> None:
    rid = client.post("/fhir/Patient", json=_patient("m2")).json()["id"]
    reply = client.put(f"/fhir/Patient?identifier={SYSTEM}|m2", json=_patient("m2", rid, "Roe"))
    assert reply.status_code == 200
    assert reply.json()["meta"]["versionId"] == "2"
    assert reply.json()["name"][0]["family"] == "Roe"


def test_one_match_with_other_id_is_rejected(client: TestClient) -> None:
    client.post("/fhir/Patient", json=_patient("m3"))
    reply = client.put(f"/fhir/Patient?identifier={SYSTEM}|m3", json=_patient("m3", "someone-else"))
    assert reply.status_code == 400
    assert reply.json()["issue"][0]["expression"] == ["Patient.id"]
