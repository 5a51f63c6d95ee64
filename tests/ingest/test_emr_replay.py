"""Replay and dead letters: the kept raw payload is re-run with the current mapping; nothing is lost."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhirlake import cli
from ingest.emr_adapters import normalize
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, container_of, make_settings, open_client
from tests.fixtures.identity import login, register
from tests.ingest.emr_support import BULK, HL7, post, read, stored_ids


def _printed(capsys: pytest.CaptureFixture[str]) -> Any:
    """The JSON document a command printed last (log lines may come before it)."""
    out = "\n" + capsys.readouterr().out
    return json.loads(out[out.rfind("\n{") + 1 :])


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRLAKE_INGEST__VALIDATION_WORKERS", "0")
    monkeypatch.setenv("FHIRLAKE_LAKE__COMMIT_INTERVAL_S", "0.2")


def test_replay_after_a_mapping_change_produces_corrected_resources_with_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path / "data")
    raw = (HL7 / "LAB-ORU-2.hl7").read_bytes()
    with monkeypatch.context() as broken:
        broken.delitem(normalize._UCUM, "%")  # the mapping as first shipped: % not known as UCUM
        with open_client(settings) as client:
            response = post(client, "hl7v2", raw)
            oid = stored_ids(client, response, "Observation")[0]
            assert "code" not in read(client, "Observation", oid)["valueQuantity"]
    code = cli.main(["ingest", "replay", "--adapter", "hl7v2", "--since", "2000-01-01T00:00:00Z",
                     "--data-dir", str(settings.data_dir)])  # fmt: skip
    assert code == 0
    assert _printed(capsys) == {"adapter": "hl7v2", "total": 1, "stored": 1, "failed": 0}
    with open_client(settings) as client:
        corrected = read(client, "Observation", oid)
        assert corrected["meta"]["versionId"] == "2"
        assert corrected["valueQuantity"] == {
            "value": 0,
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        }
        provenance = read(client, "Provenance", f"hl7v2-{hashlib.sha256(raw).hexdigest()[:40]}")
        assert provenance["meta"]["versionId"] == "2"
        assert provenance["entity"][0]["what"]["identifier"]["value"] == hashlib.sha256(raw).hexdigest()
        assert {"reference": f"Observation/{oid}"} in provenance["target"]


def test_replay_since_a_later_time_touches_nothing(tmp_path: Path, cli_env: None) -> None:
    settings = make_settings(tmp_path / "data")
    with open_client(settings) as client:
        post(client, "hl7v2", (HL7 / "ADT-A04-01.hl7").read_bytes())
    assert (
        cli.main(
            ["ingest", "replay", "--adapter", "hl7v2", "--since", "2999-01-01", "--data-dir", str(settings.data_dir)]
        )
        == 0
    )


def _ops(client: TestClient) -> dict[str, str]:
    data_dir = container_of(client).settings.data_dir
    return login(client, register(data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()


def test_dead_letters_are_listed_and_retried_through_the_admin_api(client: TestClient) -> None:
    encounter = (BULK / "Encounter.000.ndjson").read_bytes().splitlines()[0]
    response = post(client, "fhir", encounter, "application/fhir+ndjson")
    assert response.status_code == 400  # its Practitioner, Organization and Location are not there yet
    letter_id = int(response.headers["X-Dead-Letter"])
    assert client.get("/ingest/dead-letters").status_code == 403  # an EMR feed is not an operator
    letters = client.get("/ingest/dead-letters", headers=_ops(client)).json()["deadLetters"]
    [letter] = [x for x in letters if x["id"] == letter_id]
    assert letter["code"] == "invalid-input" and "conditional reference matches no resource" in letter["reason"]
    retry = client.post(f"/ingest/dead-letters/{letter_id}/$retry", headers=_ops(client)).json()
    assert retry["stored"] is False and retry["reason"][0]["code"] == "not-found"
    for name in ("Organization", "Location", "Practitioner"):
        assert (
            post(client, "fhir", (BULK / f"{name}.000.ndjson").read_bytes(), "application/fhir+ndjson").status_code
            == 200
        )
    assert client.post(f"/ingest/dead-letters/{letter_id}/$retry", headers=_ops(client)).json()["stored"] is True
    assert letter_id not in [
        x["id"] for x in client.get("/ingest/dead-letters", headers=_ops(client)).json()["deadLetters"]
    ]
    assert client.post("/ingest/dead-letters/999999/$retry", headers=_ops(client)).status_code == 404


def test_dead_letters_cli_lists_and_retries(tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path / "data")
    with open_client(settings) as client:
        post(client, "hl7v2", (HL7 / "SIU-S12-01.hl7").read_bytes())
    data_dir = str(settings.data_dir)
    assert cli.main(["ingest", "dead-letters", "list", "--data-dir", data_dir]) == 0
    [letter] = _printed(capsys)["deadLetters"]
    assert letter["adapter"] == "hl7v2" and letter["code"] == "adapter-unsupported"
    assert cli.main(["ingest", "dead-letters", "retry", "--data-dir", data_dir]) == 1  # still not mapped
    assert _printed(capsys) == {"retried": [{"id": letter["id"], "stored": False, "code": "adapter-unsupported"}]}
    assert cli.main(["ingest", "dead-letters", "list", "--data-dir", data_dir]) == 0
    assert _printed(capsys)["deadLetters"][0]["attempts"] == 2
