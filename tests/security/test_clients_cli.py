"""``fhirlake clients add`` registers what the gateway then enforces: a patient binding and v1 scope aliases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from security.certs import issue_client
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, make_settings, open_client
from tests.fixtures.identity import Caller, login
from tests.fixtures.oauth import generate_key


def _add(data: Path, client_id: str, role: Role, scope: str, *extra: str) -> Caller:
    """Register through the real command line, as an operator would, and return a caller holding the key."""
    key = generate_key("RS384")
    pem = data.parent / f"{client_id}.pem"
    pem.write_bytes(key.public_pem)
    command = ["clients", "add", "--client-id", client_id, "--role", role.value, "--tenant", "default"]
    command += ["--scope", scope, "--public-key", str(pem), "--data-dir", str(data), *extra]
    subprocess.run([sys.executable, "-m", "fhirlake.cli", *command], check=True, capture_output=True, timeout=120)
    return Caller(client_id, role, key)


def _patient_with_lab(client: TestClient, family: str) -> tuple[str, str]:
    pid = client.post("/fhir/Patient", content=orjson.dumps({"resourceType": "Patient", "name": [{"family": family}]}))
    patient = str(pid.json()["id"])
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
    }
    return patient, str(client.post("/fhir/Observation", content=orjson.dumps(observation)).json()["id"])


def test_a_patient_bound_app_with_v1_read_scopes_sees_only_its_patient(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_client(make_settings(data)) as client:
        mine, my_lab = _patient_with_lab(client, "Zqxmine")
        other, other_lab = _patient_with_lab(client, "Zqxother")
        app = login(client, _add(data, "app-one", Role.PATIENT_APP, "patient/*.read", "--patient", mine), TOKEN_URL)
        headers = app.headers()
        assert client.get(f"/fhir/Patient/{mine}", headers=headers).status_code == 200
        assert client.get(f"/fhir/Observation/{my_lab}", headers=headers).status_code == 200
        assert client.get(f"/fhir/Patient/{other}", headers=headers).status_code == 404
        assert client.get(f"/fhir/Observation/{other_lab}", headers=headers).status_code == 404
        found = client.get("/fhir/Observation", headers=headers).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [my_lab] and found["total"] == 1
        assert "Zqxother" not in client.get(f"/fhir/Patient/{mine}/$everything", headers=headers).text
        write = {"resourceType": "Patient", "name": [{"family": "Nope"}]}  # .read = rs: no create
        assert client.post("/fhir/Patient", content=orjson.dumps(write), headers=headers).status_code == 403


def test_a_v1_write_scope_creates_but_does_not_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_client(make_settings(data)) as client:
        emr = _add(data, "feed-one", Role.EMR_INTEGRATION, "system/Patient.write")
        cert_path, _ = issue_client(data / "tls", "feed-one", tmp_path / "feed-one")
        emr.cert_pem = cert_path.read_text()
        headers = login(client, emr, TOKEN_URL).headers()
        doc = {"resourceType": "Patient", "name": [{"family": "Zqxwriter"}]}
        created = client.post("/fhir/Patient", content=orjson.dumps(doc), headers=headers)
        assert created.status_code == 201, created.text
        assert client.get(f"/fhir/Patient/{created.json()['id']}", headers=headers).status_code == 403
