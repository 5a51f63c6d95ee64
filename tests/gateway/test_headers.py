"""Prefer and X-Request-Id as clients actually send them."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

PATIENT = {"resourceType": "Patient", "name": [{"family": "Doe"}]}


def test_prefer_with_several_comma_separated_preferences(client: TestClient) -> None:
    reply = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "handling=strict, return=minimal"})
    assert reply.status_code == 201
    assert reply.content == b""
    strict = client.get("/fhir/Patient?bogus=1", headers={"Prefer": "return=minimal, handling=strict"})
    assert strict.status_code == 400


def test_client_request_id_is_kept_only_when_it_is_a_uuid(client: TestClient) -> None:
    given = str(uuid.uuid4())
    assert client.get("/fhir/metadata", headers={"X-Request-Id": given}).headers["x-request-id"] == given
    echoed = client.get("/fhir/metadata", headers={"X-Request-Id": "MRN12345"}).headers["x-request-id"]
    assert echoed != "MRN12345"
    uuid.UUID(echoed)
