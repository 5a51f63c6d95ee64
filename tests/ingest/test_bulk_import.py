"""FHIR bulk $import of Synthea NDJSON: streaming, conditional references resolved, bad lines dead-lettered."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.app import container_of
from tests.fixtures.identity import CERT_HEADER
from tests.ingest.emr_support import BULK, dead_letters, read

SHARED = Path("/work/shared/data/synthea_bulk_ndjson/10-patients")


def _stage(client: TestClient, source: Path) -> list[str]:
    target = container_of(client).settings.data_dir / "import"
    target.mkdir(exist_ok=True)
    names = []
    for path in sorted(source.glob("*.ndjson")):
        shutil.copy(path, target / path.name)
        names.append(path.name)
    return names


def _import(client: TestClient, urls: list[str]) -> dict[str, object]:
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}]
        + [{"name": "input", "part": [{"name": "url", "valueUri": url}]} for url in urls],
    }
    response = client.post("/fhir/$import", content=orjson.dumps(params))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_bulk_import_resolves_conditional_references_to_included_resources(client: TestClient) -> None:
    names = _stage(client, BULK)
    import_dir = container_of(client).settings.data_dir / "import"
    report = _import(client, [f"file://{import_dir / n}" if i % 2 else n for i, n in enumerate(names)])
    by_file = {i["diagnostics"].split(":")[0]: i["diagnostics"] for i in report["issue"]}  # type: ignore[union-attr,index]
    assert by_file["Encounter.000.ndjson"].endswith("60 lines, 60 stored, 0 dead letters")
    assert by_file["log.ndjson"].endswith("4 lines, 0 stored, 4 dead letters")  # not FHIR: kept with a reason
    letters = [x for x in dead_letters(client) if "not a FHIR resource" in str(x["reason"])]
    assert len(letters) == 4
    line = orjson.loads((BULK / "Encounter.000.ndjson").read_bytes().splitlines()[0])
    encounter = read(client, "Encounter", line["id"])
    practitioner = encounter["participant"][0]["individual"]["reference"]
    organization = encounter["serviceProvider"]["reference"]
    location = encounter["location"][0]["location"]["reference"]
    assert line["participant"][0]["individual"]["reference"].startswith("Practitioner?identifier=")
    for reference, rtype in ((practitioner, "Practitioner"), (organization, "Organization"), (location, "Location")):
        assert reference.startswith(f"{rtype}/") and "?" not in reference
        assert read(client, rtype, reference.split("/")[1])["resourceType"] == rtype


def test_import_refuses_files_outside_the_import_directory(client: TestClient) -> None:
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "input", "part": [{"name": "url", "valueUri": "file:///etc/passwd"}]}],
    }
    assert client.post("/fhir/$import", content=orjson.dumps(params)).status_code == 400
    traversal = {
        "resourceType": "Parameters",
        "parameter": [{"name": "input", "part": [{"name": "url", "valueUri": "../keys/keystore.db"}]}],
    }
    assert client.post("/fhir/$import", content=orjson.dumps(traversal)).status_code == 400
    remote = {
        "resourceType": "Parameters",
        "parameter": [{"name": "input", "part": [{"name": "url", "valueUri": "https://example.com/x.ndjson"}]}],
    }
    assert client.post("/fhir/$import", content=orjson.dumps(remote)).status_code == 400


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="the full Synthea bulk set lives in the workplace's shared data")
def test_the_whole_synthea_bulk_set_imports(client: TestClient) -> None:
    names = _stage(client, SHARED)
    report = _import(client, names)
    issues = report["issue"]
    assert all(i["diagnostics"].endswith(" 0 dead letters") for i in issues if "log.ndjson" not in i["diagnostics"])  # type: ignore[union-attr]


def test_import_and_adapter_posts_need_the_client_certificate(client: TestClient) -> None:
    """The same token without its certificate may not write, through ``$import`` or an EMR adapter."""
    names = _stage(client, BULK)
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "input", "part": [{"name": "url", "valueUri": names[0]}]}],
    }
    cert = client.headers.pop(CERT_HEADER)
    try:
        refused = client.post("/fhir/$import", content=orjson.dumps(params))
        assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
        adapter = client.post("/ingest/fhir", content=(BULK / names[0]).read_bytes().splitlines()[0])
        assert adapter.status_code == 403
    finally:
        client.headers[CERT_HEADER] = cert
    assert dead_letters(client) == []  # refused before anything was read
