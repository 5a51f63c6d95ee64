"""Every copied EMR sample goes through its adapter over HTTP: stored, or a dead letter with a precise reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.app import container_of
from tests.ingest.emr_support import ER7, HL7, dead_letters, hl7_segments, post, samples


def test_every_sample_is_stored_or_dead_lettered_with_its_reason(client: TestClient) -> None:
    outcomes: dict[str, int] = {}
    for adapter, path in samples():
        raw = path.read_bytes()
        response = post(client, adapter, raw, "application/fhir+ndjson" if path.suffix == ".ndjson" else None)
        assert response.status_code < 500, (path.name, response.text)
        assert response.headers["X-Payload-Sha256"] == hashlib.sha256(raw).hexdigest()
        outcomes[f"{adapter}/{path.name}"] = response.status_code
        if response.status_code == 200 and "X-Dead-Letter" not in response.headers:
            if adapter == "hl7v2":
                assert hl7_segments(response)["MSA"][1] == "AA"
            else:
                assert response.json()["type"] == "transaction-response"
            continue
        letter_id = int(response.headers["X-Dead-Letter"])
        letter = next(x for x in dead_letters(client) if x["id"] == letter_id)
        assert letter["adapter"] == adapter and letter["reason"] and letter["code"], letter
        if adapter == "hl7v2":
            assert hl7_segments(response)["MSA"][1] in ("AE", "AR")
    stored = [k for k, v in outcomes.items() if v == 200]
    # What must be stored (not merely "not crash"): the mapped HL7 message types and the vendor samples.
    for name in ("hl7v2/ADT-A01-01.hl7", "hl7v2/ORU-R01-RMGEAD.hl7", "hl7v2/LAB-ORU-2.hl7", "hl7v2/VXU-V04-01.hl7",
                 "hl7v2/ADT-A40-01.hl7", "cerner/searchset-patient-observation.json", "fhir/Patient.000.ndjson",
                 "athena/subscription-notification-patient.json", "epic/patient_resource__RESOURCE.json",
                 "fhir/Encounter.000.ndjson", "fhir/Immunization.000.ndjson"):  # fmt: skip
        assert name in stored, (name, outcomes[name])
    assert len(stored) >= 35, outcomes


def test_dead_letters_keep_reasons_without_phi_and_the_raw_payload_sealed(client: TestClient) -> None:
    raw = (
        b"MSH|^~\\&|LAB|HOSP|||20240101||SIU^S12|CANARYCONTROL|P|2.5\rPID|1||CANARY-MRN-777^^^HOSP^MR||Zqxcanary^Ann\r"
    )
    response = post(client, "hl7v2", raw)
    assert response.status_code == 400
    ack = hl7_segments(response)
    assert ack["MSA"][1:3] == ["AR", "CANARYCONTROL"]
    letter = dead_letters(client)[-1]
    assert letter["code"] == "adapter-unsupported" and "SIU^S12" in letter["reason"]
    assert "CANARY" not in str(letter) and "Zqxcanary" not in str(letter)
    data_dir: Path = container_of(client).settings.data_dir
    db = (data_dir / "ingest" / "raw.db").read_bytes() + (data_dir / "ingest" / "raw.db-wal").read_bytes()
    assert b"Zqxcanary" not in db and b"CANARY-MRN" not in db  # sealed, not clear


def test_unknown_adapter_and_wrong_media_type_are_rejected(client: TestClient) -> None:
    assert post(client, "no-such-emr", b"{}").status_code == 404
    assert post(client, "fhir", b"{}", "application/xml").status_code == 415


@pytest.mark.parametrize("ending", [b"\r", b"\n", b"\r\n"])
def test_hl7_segment_endings_and_bom_are_all_accepted(client: TestClient, ending: bytes) -> None:
    lines = [
        b"MSH|^~\\&|ADT|HOSP|FHIRLAKE|LAKE|20240102101500+0100||ADT^A04^ADT_A01|CTRL-1|P|2.3",
        b"EVN|A04|20240102101500+0100",
        b"PID|1||7788^^^HOSP^MR||Doe^Jane||19700101|F",
        b"PV1|1|O|||||||||||||||||V-1",
    ]
    response = post(client, "hl7v2", b"\xef\xbb\xbf" + ending.join(lines) + ending)
    assert response.status_code == 200, response.text
    assert hl7_segments(response)["MSA"][1:3] == ["AA", "CTRL-1"]


def test_ingest_needs_a_write_token_and_mtls(client: TestClient) -> None:
    raw = (HL7 / "ADT-A04-01.hl7").read_bytes()
    no_cert = client.post("/ingest/hl7v2", content=raw, headers={"Content-Type": ER7, "x-client-cert": ""})
    assert no_cert.status_code == 403
    anonymous = client.post("/ingest/hl7v2", content=raw, headers={"Content-Type": ER7, "Authorization": ""})
    assert anonymous.status_code == 401
    assert dead_letters(client) == []  # refused before anything was kept
