"""Helpers for the EMR adapter tests: samples, posting payloads, reading back what was stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi.testclient import TestClient

from ingest.bulk_import import order
from tests.fixtures.app import container_of
from tests.fixtures.data import DATA

EMR = DATA / "emr"
HL7 = DATA / "hl7v2"
BULK = DATA / "synthea_bulk"
ER7 = "x-application/hl7-v2+er7"
MEDIA = {"hl7v2": ER7}


def samples() -> list[tuple[str, Path]]:
    """(adapter, file) for every copied sample."""
    out = [("epic", p) for p in sorted((EMR / "epic").glob("*.json"))]
    out += [("athena", p) for p in sorted((EMR / "athena").glob("*.json"))]
    out += [("cerner", p) for p in sorted((EMR / "cerner").glob("*.json"))]
    out += [("hl7v2", p) for p in sorted(HL7.glob("*.hl7"))]
    out += [("fhir", p) for p in order(list(BULK.glob("*.ndjson")))]  # what others point at first
    return out


def post(client: TestClient, adapter: str, payload: bytes, media: str | None = None) -> httpx.Response:
    ctype = media or MEDIA.get(adapter, "application/fhir+json")
    return client.post(f"/ingest/{adapter}", content=payload, headers={"Content-Type": ctype, "Accept": "*/*"})


def read(client: TestClient, rtype: str, rid: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{rtype}/{rid}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def search(client: TestClient, rtype: str, **params: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{rtype}", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def provenance_of(client: TestClient, response: httpx.Response) -> dict[str, Any]:
    """The Provenance the adapter attached to an ingested payload (its id derives from the payload hash)."""
    adapter = response.request.url.path.rsplit("/", 1)[1]
    return read(client, "Provenance", f"{adapter}-{response.headers['X-Payload-Sha256'][:40]}")


def stored_ids(client: TestClient, response: httpx.Response, rtype: str) -> list[str]:
    """Ids of the ``rtype`` resources an ingested payload became, in payload order (from its Provenance)."""
    assert response.status_code == 200, response.text
    targets = [t["reference"] for t in provenance_of(client, response)["target"]]
    return [t.split("/")[1] for t in targets if t.startswith(f"{rtype}/")]


def hl7_segments(response: httpx.Response) -> dict[str, list[str]]:
    """The ACK's segments by name (fields split on |)."""
    out: dict[str, list[str]] = {}
    for segment in response.content.decode().split("\r"):
        if segment:
            out[segment[:3]] = segment.split("|")
    return out


def dead_letters(client: TestClient) -> list[dict[str, Any]]:
    emr = container_of(client).emr
    assert emr is not None
    return [letter.as_json() for letter in emr.raw.letters("open")]


def json_of(payload: bytes) -> Any:
    return orjson.loads(payload)
