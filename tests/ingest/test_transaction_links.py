"""Transactions rewrite uri/url links to entries, not only References (FHIR R4 3.1.0.11.2)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.fixtures.data import official


def test_attachment_url_follows_the_binary_created_in_the_same_bundle(client: TestClient) -> None:
    bundle = official("Bundle-xds.json")
    reply = client.post("/fhir", json=bundle)
    assert reply.status_code == 200, reply.text
    locations = {
        e["fullUrl"]: r["response"]["location"].rsplit("/_history", 1)[0]
        for e, r in zip(bundle["entry"], reply.json()["entry"], strict=True)  # type: ignore[arg-type]
    }
    binary = next(loc for loc in locations.values() if loc.startswith("Binary/"))
    doc_location = next(loc for loc in locations.values() if loc.startswith("DocumentReference/"))
    doc = client.get(f"/fhir/{doc_location}").json()
    assert doc["content"][0]["attachment"]["url"] == binary
    assert client.get(f"/fhir/{binary}").status_code == 200


def test_narrative_links_to_entries_are_rewritten(client: TestClient) -> None:
    patient_url = "urn:uuid:5c3a8c1e-2f43-4a7e-9d55-8a9d1f0e7b11"
    div = f'<div xmlns="http://www.w3.org/1999/xhtml">See <a href="{patient_url}">the patient</a></div>'
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:0f1d5b0e-7d0a-4a55-b5b0-3c2f7e1a9c22",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "note"},
                    "subject": {"reference": patient_url},
                    "text": {"status": "generated", "div": div},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    reply = client.post("/fhir", json=bundle).json()
    patient_ref = reply["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    observation = client.get(f"/fhir/{reply['entry'][1]['response']['location'].rsplit('/_history', 1)[0]}").json()
    assert f'href="{patient_ref}"' in observation["text"]["div"]
    assert patient_url not in observation["text"]["div"]
