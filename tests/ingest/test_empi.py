"""One patient across systems: the enterprise key links the same person from Epic and HL7 v2, not namesakes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient

from ingest.empi import ENTERPRISE_SYSTEM
from tests.fixtures.app import container_of
from tests.ingest.emr_support import EMR, post, read, stored_ids


def _ekey(patient: dict[str, Any]) -> str:
    return str(next(i["value"] for i in patient["identifier"] if i["system"] == ENTERPRISE_SYSTEM))


def _adt(facility: str, mrn: str, pid_rest: str, control: str) -> bytes:
    return (
        f"MSH|^~\\&|ADT|{facility}|FHIRLAKE|LAKE|20240102101500-0500||ADT^A04^ADT_A01|{control}|P|2.5.1\r"
        f"PID|1||{mrn}^^^{facility}^MR||{pid_rest}\r"
    ).encode()


# Betty MyChart as the Epic sample has her: born 2010-02-03, female, 610-357-7956, ZIP 18966.
BETTY_HL7 = "MyChart^Betty^E||20100203|F|||12 Other St^^Southampton^PA^18966^USA||610-357-7956"
NAMESAKE_HL7 = "MyChart^Betty||19880517|F|||9 Elm St^^Dover^DE^19901^USA||302-555-0100"


def _patient_of(client: TestClient, response: Any) -> dict[str, Any]:
    [pid] = stored_ids(client, response, "Patient")
    return read(client, "Patient", pid)


def test_same_person_from_epic_and_hl7_shares_one_key_a_namesake_does_not(client: TestClient) -> None:
    epic = _patient_of(client, post(client, "epic", (EMR / "epic" / "patient_resource__RESOURCE.json").read_bytes()))
    hl7 = _patient_of(client, post(client, "hl7v2", _adt("CHOPADT", "M-1001", BETTY_HL7, "E1")))
    namesake = _patient_of(client, post(client, "hl7v2", _adt("CHOPADT", "M-2002", NAMESAKE_HL7, "E2")))
    assert epic["id"] != hl7["id"]
    assert _ekey(epic) == _ekey(hl7)
    assert _ekey(namesake) != _ekey(epic)
    index = container_of(client).emr.index  # type: ignore[union-attr]
    assert index.members(_ekey(epic)) == sorted([epic["id"], hl7["id"]])
    found = client.get("/fhir/Patient", params={"identifier": f"{ENTERPRISE_SYSTEM}|{_ekey(epic)}"}).json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted([epic["id"], hl7["id"]])

    query = {"resourceType": "Patient", "name": [{"family": "MyChart", "given": ["Betty"]}], "birthDate": "2010-02-03",
             "gender": "female", "telecom": [{"system": "phone", "value": "+1 610 357 7956"}]}  # fmt: skip
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": query}]}
    response = client.post("/fhir/Patient/$match", content=orjson.dumps(params))
    assert response.status_code == 200, response.text
    grades = {e["resource"]["id"]: e["search"]["extension"][0]["valueCode"] for e in response.json()["entry"]}
    assert grades[epic["id"]] == grades[hl7["id"]] == "probable"
    assert grades.get(namesake["id"]) == "possible"  # shown for review, never linked


def test_a_trusted_identifier_links_deterministically_despite_different_demographics(client: TestClient) -> None:
    first = _patient_of(
        client, post(client, "hl7v2", _adt("NORTH", "N-1", "Smith^Al||19500101|M|||||||||||123-45-6789", "D1"))
    )
    second = _patient_of(
        client, post(client, "hl7v2", _adt("SOUTH", "S-9", "Smyth^Alan||19500102|M|||||||||||123-45-6789", "D2"))
    )
    assert first["id"] != second["id"] and _ekey(first) == _ekey(second)


def test_index_stores_no_clear_identifiers_or_names(client: TestClient) -> None:
    post(client, "hl7v2", _adt("CHOPADT", "ZQXMRN-4711", "Zqxcanary^Betty||20100203|F", "P1"))
    data_dir = container_of(client).settings.data_dir / "ingest"
    blob = b"".join(p.read_bytes() for p in data_dir.glob("empi.db*"))
    assert blob and b"Zqxcanary" not in blob and b"ZQXMRN" not in blob
