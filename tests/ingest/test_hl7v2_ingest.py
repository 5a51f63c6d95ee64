"""HL7 v2 end to end: ADT updates one Patient, ORU gives coded Observations, A40 merges as links."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ingest.empi import ENTERPRISE_SYSTEM
from tests.ingest.emr_support import HL7, hl7_segments, post, read, stored_ids

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _ekey(patient: dict[str, object]) -> str:
    return next(i["value"] for i in patient["identifier"] if i["system"] == ENTERPRISE_SYSTEM)  # type: ignore[attr-defined,index]


def test_a01_then_a08_for_the_same_person_update_one_patient(client: TestClient) -> None:
    admit = post(client, "hl7v2", (HL7 / "ADT-A01-01.hl7").read_bytes())
    assert admit.status_code == 200 and hl7_segments(admit)["MSA"][1:3] == ["AA", "MSG00001"]
    update = post(client, "hl7v2", (HL7 / "ADT-A08-01.hl7").read_bytes())
    assert update.status_code == 200
    [pid] = stored_ids(client, admit, "Patient")
    assert stored_ids(client, update, "Patient") == [pid]
    patient = read(client, "Patient", pid)
    assert patient["meta"]["versionId"] == "2"
    assert patient["name"][0]["family"] == "EVERYMAN" and patient["birthDate"] == "1988-08-18"
    assert patient["gender"] == "male"
    assert {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123456789"}.items() <= next(
        i for i in patient["identifier"] if i["system"] == "http://hl7.org/fhir/sid/us-ssn"
    ).items()
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200  # history kept
    [encounter] = stored_ids(client, update, "Encounter")
    assert read(client, "Encounter", encounter)["subject"] == {"reference": f"Patient/{pid}"}


def test_oru_r01_yields_loinc_coded_observations_with_ucum_units_linked_to_the_patient(client: TestClient) -> None:
    response = post(client, "hl7v2", (HL7 / "LAB-ORU-2.hl7").read_bytes())
    assert response.status_code == 200, response.text
    [pid] = stored_ids(client, response, "Patient")
    observations = [read(client, "Observation", oid) for oid in stored_ids(client, response, "Observation")]
    assert len(observations) == 10
    for obs in observations:
        assert obs["subject"] == {"reference": f"Patient/{pid}"}
        assert obs["code"]["coding"][0]["system"] == LOINC
        assert obs["effectiveDateTime"] == "2014-10-06T08:30:00+07:00"
    basophils = next(o for o in observations if o["code"]["coding"][0]["code"] == "30180-4")
    assert basophils["valueQuantity"] == {"value": 0, "unit": "%", "system": UCUM, "code": "%"}
    leukocytes = next(o for o in observations if o["code"]["coding"][0]["code"] == "11156-7")
    assert leukocytes["valueQuantity"]["code"] == "10*9/L"
    [report_id, _] = stored_ids(client, response, "DiagnosticReport")
    report = read(client, "DiagnosticReport", report_id)
    assert report["code"]["coding"][0] == {
        "code": "26464-8",
        "system": LOINC,
        "display": "Differential WBC Count, buffy coat",
    }
    assert len(report["result"]) == 5


def test_vxu_v04_yields_immunizations_with_cvx(client: TestClient) -> None:
    response = post(client, "hl7v2", (HL7 / "VXU.hl7").read_bytes())
    assert response.status_code == 200, response.text
    immunizations = [read(client, "Immunization", i) for i in stored_ids(client, response, "Immunization")]
    codes = {(c["system"], c["code"]) for imm in immunizations for c in imm["vaccineCode"]["coding"]}
    assert ("http://hl7.org/fhir/sid/cvx", "88") in codes


def _adt(mrn: str, family: str, control: str, trigger: str = "A04") -> bytes:
    return (
        f"MSH|^~\\&|ADT|HOSP|FHIRLAKE|LAKE|20240102101500+0100||ADT^{trigger}|{control}|P|2.5\r"
        f"PID|1||{mrn}^^^HOSP^MR||{family}^Pat||19700101|F\r"
    ).encode()


def test_a40_merge_keeps_both_patients_linked_and_history_intact(client: TestClient) -> None:
    prior = stored_ids(client, post(client, "hl7v2", _adt("56789", "Before", "C1")), "Patient")[0]
    survivor = stored_ids(client, post(client, "hl7v2", _adt("12345", "After", "C2")), "Patient")[0]
    merge = (
        b"MSH|^~\\&|ADT|HOSP|FHIRLAKE|LAKE|20240103101500+0100||ADT^A40^ADT_A39|C3|P|2.5\r"
        b"EVN|A40|20240103101500+0100\rPID|1||12345^^^HOSP^MR||After^Pat||19700101|F\rMRG|56789^^^HOSP^MR\r"
    )
    response = post(client, "hl7v2", merge)
    assert response.status_code == 200 and hl7_segments(response)["MSA"][1] == "AA"
    old, new = read(client, "Patient", prior), read(client, "Patient", survivor)
    assert old["link"] == [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}]
    assert old["active"] is False and old["name"][0]["family"] == "Before"  # the record is kept, only linked
    assert new["link"] == [{"other": {"reference": f"Patient/{prior}"}, "type": "replaces"}]
    assert _ekey(old) == _ekey(new)
    first = client.get(f"/fhir/Patient/{prior}/_history/1").json()
    assert "link" not in first  # history is never rewritten
