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
