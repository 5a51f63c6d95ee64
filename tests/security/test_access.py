"""Who may do what, through the real HTTP stack: a decision table of roles x operations x tenants x patients.

The expected outcome of every case comes from the rules of the issue, written
out here independently of the implementation (``expected``), not from the
policy files.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from security.principal import Role
from tests.fixtures.app import TOKEN_URL, make_settings, open_client
from tests.fixtures.identity import Caller, login, register

LAB = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
VITAL = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}
PATIENTS = ("p1", "p2", "p3")  # p1: org A; p2: org B; p3: cared for by Practitioner doc3 (org B)


@dataclass
class World:
    client: TestClient
    data_dir: Path
    ids: dict[str, str]  # symbolic name -> logical id
    callers: dict[str, Caller]

    def headers(self, who: str) -> dict[str, str]:
        caller = self.callers[who]
        return caller.headers(cert=who != "emr_nocert")


def _create(client: TestClient, resource: dict[str, Any]) -> str:
    reply = client.post(f"/fhir/{resource['resourceType']}", content=orjson.dumps(resource))
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def _observation(patient: str, category: dict[str, Any], code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [category],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 1.5, "unit": "mmol/L"},
    }


def _build(client: TestClient, data_dir: Path) -> World:
    ids: dict[str, str] = {}
    ids["orgA"] = _create(client, {"resourceType": "Organization", "name": "A"})
    ids["orgB"] = _create(client, {"resourceType": "Organization", "name": "B"})
    ids["doc3"] = _create(client, {"resourceType": "Practitioner", "name": [{"family": "Three"}]})
    people = {
        "p1": {"managingOrganization": {"reference": f"Organization/{ids['orgA']}"}},
        "p2": {"managingOrganization": {"reference": f"Organization/{ids['orgB']}"}},
        "p3": {"generalPractitioner": [{"reference": f"Practitioner/{ids['doc3']}"}]},
    }
    for name, extra in people.items():
        ids[name] = _create(
            client,
            {
                "resourceType": "Patient",
                "name": [{"family": f"Fam{name}", "given": ["G"]}],
                "birthDate": "1970-04-05",
                "identifier": [{"system": "urn:mrn", "value": f"MRN-{name}"}],
                **extra,
            },
        )
        ids[f"{name}-lab"] = _create(client, _observation(ids[name], LAB, "2345-7"))
        ids[f"{name}-vital"] = _create(client, _observation(ids[name], VITAL, "8867-4"))
    callers = {
        "emr": register(data_dir, Role.EMR_INTEGRATION, "system/*.cruds", cert=True),
        "emr_nocert": register(data_dir, Role.EMR_INTEGRATION, "system/*.cruds", cert=True),
        "emr_patient_only": register(data_dir, Role.EMR_INTEGRATION, "system/Patient.cruds", cert=True),
        "emr_other_tenant": register(data_dir, Role.EMR_INTEGRATION, "system/*.cruds", tenant="other", cert=True),
        "clin_a": register(data_dir, Role.CLINICIAN, "user/*.rs", organization=ids["orgA"]),
        "clin_doc3": register(data_dir, Role.CLINICIAN, "user/*.rs", fhir_user=f"Practitioner/{ids['doc3']}"),
        "clin_other_tenant": register(data_dir, Role.CLINICIAN, "user/*.rs", tenant="other", organization=ids["orgA"]),
        "app_p1": register(data_dir, Role.PATIENT_APP, "patient/*.rs", patient=ids["p1"]),
        "app_p1_lab": register(
            data_dir, Role.PATIENT_APP, "patient/Observation.rs?category=laboratory", patient=ids["p1"]
        ),
        "researcher": register(data_dir, Role.RESEARCHER, "system/*.rs"),
        "compliance": register(data_dir, Role.COMPLIANCE_OFFICER, "system/*.rs"),
        "ops": register(data_dir, Role.OPS, "system/Patient.d"),
    }
    for caller in callers.values():
        login(client, caller, TOKEN_URL)
    return World(client, data_dir, ids, callers)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("access") / "data"
    with open_client(make_settings(data_dir)) as client:
        yield _build(client, data_dir)


# -- the rules, written out ------------------------------------------------------------------------------

OTHER_TENANT = {"emr_other_tenant", "clin_other_tenant"}
NO_CLINICAL = {"compliance", "ops"}


def sees(who: str, patient: str) -> bool:
    """Whose compartment a caller may read."""
    return {
        "emr": True,
        "emr_nocert": True,
        "researcher": True,
        "clin_a": patient == "p1",
        "clin_doc3": patient == "p3",
        "app_p1": patient == "p1",
        "app_p1_lab": patient == "p1",
    }.get(who, False)


def expected_read(who: str, kind: str, patient: str | None, lab: bool = False) -> int:
    """Status of GET Type/id: 403 when the caller may never read the type, 404 when it may not see this one."""
    if who in OTHER_TENANT or who in NO_CLINICAL:
        return 403
    if who == "emr_patient_only":
        return 200 if kind == "Patient" else 403
    if who == "app_p1_lab":
        if kind != "Observation":
            return 403
        return 200 if patient == "p1" and lab else 404
    if patient is None:
        return 200
    return 200 if sees(who, patient) else 404


def expected_write(who: str, kind: str) -> int:
    if who == "emr":
        return 201
    if who == "emr_patient_only":
        return 201 if kind == "Patient" else 403
    return 403  # no certificate, another tenant, or a role that never writes


def expected_count(who: str) -> int | None:
    """How many Observations a search without criteria may return (None: 403)."""
    if who in OTHER_TENANT or who in NO_CLINICAL or who == "emr_patient_only":
        return None
    if who == "app_p1_lab":
        return 1
    return sum(2 for p in PATIENTS if sees(who, p))


CALLERS = [
    "emr",
    "emr_nocert",
    "emr_patient_only",
    "emr_other_tenant",
    "clin_a",
    "clin_doc3",
    "clin_other_tenant",
    "app_p1",
    "app_p1_lab",
    "researcher",
    "compliance",
    "ops",
]
READS = [("Patient", p, False) for p in PATIENTS] + [("Observation", p, lab) for p in PATIENTS for lab in (True, False)]
READ_CASES = [(who, kind, p, lab) for who in CALLERS for kind, p, lab in READS] + [
    (who, "Practitioner", None, False) for who in CALLERS
]


@pytest.mark.parametrize(("who", "kind", "patient", "lab"), READ_CASES)
def test_read_decision(world: World, who: str, kind: str, patient: str | None, lab: bool) -> None:
    if kind == "Patient":
        rid = world.ids[str(patient)]
    elif kind == "Observation":
        rid = world.ids[f"{patient}-{'lab' if lab else 'vital'}"]
    else:
        rid = world.ids["doc3"]
    reply = world.client.get(f"/fhir/{kind}/{rid}", headers=world.headers(who))
    assert reply.status_code == expected_read(who, kind, patient, lab), reply.text
    vread = world.client.get(f"/fhir/{kind}/{rid}/_history/1", headers=world.headers(who))
    assert vread.status_code == reply.status_code
    if reply.status_code != 200:
        assert reply.json()["resourceType"] == "OperationOutcome"
        assert "Fam" not in reply.text and "MRN" not in reply.text


@pytest.mark.parametrize("who", CALLERS)
def test_search_counts_only_what_the_caller_may_see(world: World, who: str) -> None:
    reply = world.client.get("/fhir/Observation", headers=world.headers(who))
    count = expected_count(who)
    if count is None:
        assert reply.status_code == 403
        return
    assert reply.status_code == 200, reply.text
    assert reply.json()["total"] == count
    assert len(reply.json().get("entry", [])) == count


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("patient", PATIENTS)
def test_patient_filter_never_widens_what_is_visible(world: World, who: str, patient: str) -> None:
    reply = world.client.get("/fhir/Observation", params={"patient": world.ids[patient]}, headers=world.headers(who))
    if expected_count(who) is None:
        assert reply.status_code == 403
        return
    visible = sees(who, patient) if who != "app_p1_lab" else patient == "p1"
    assert reply.json()["total"] == ((1 if who == "app_p1_lab" else 2) if visible else 0)


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("kind", ["Patient", "Observation"])
def test_write_decision(world: World, who: str, kind: str) -> None:
    resource: dict[str, Any] = (
        {"resourceType": "Patient", "name": [{"family": "New"}]}
        if kind == "Patient"
        else _observation(world.ids["p1"], LAB, "1234-5")
    )
    reply = world.client.post(f"/fhir/{kind}", content=orjson.dumps(resource), headers=world.headers(who))
    assert reply.status_code == expected_write(who, kind), reply.text
    rid = world.ids["p2"] if kind == "Patient" else world.ids["p2-lab"]
    delete = world.client.delete(f"/fhir/{kind}/{uuid.uuid4()}", headers=world.headers(who))
    assert delete.status_code == (204 if expected_write(who, kind) == 201 else 403)
    body = world.client.get(f"/fhir/{kind}/{rid}", headers=world.headers("emr")).json()
    update = world.client.put(f"/fhir/{kind}/{rid}", content=orjson.dumps(body), headers=world.headers(who))
    assert update.status_code == (200 if expected_write(who, kind) == 201 else 403)


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("patient", PATIENTS)
def test_search_by_blind_index_never_reveals_other_patients(world: World, who: str, patient: str) -> None:
    reply = world.client.get(
        "/fhir/Patient", params={"identifier": f"urn:mrn|MRN-{patient}"}, headers=world.headers(who)
    )
    status = expected_read(who, "Patient", patient)
    if status == 403 or who == "researcher":  # de-identified access may not search by identifying values
        assert reply.status_code == 403
        return
    assert reply.json()["total"] == (1 if status == 200 else 0)


def test_batch_entries_are_authorized_one_by_one(world: World) -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Batch"}]}
    observation = _observation(world.ids["p1"], LAB, "1111-1")
    entries = [
        {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": "Observation"}},
        {"request": {"method": "GET", "url": f"Patient/{world.ids['p1']}"}},
    ]
    headers = world.headers("emr_patient_only")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    reply = world.client.post("/fhir", content=orjson.dumps(batch), headers=headers)
    assert reply.status_code == 200, reply.text
    statuses = [e["response"]["status"] for e in reply.json()["entry"]]
    assert statuses == ["201 Created", "403 Forbidden", "403 Forbidden", "200 OK"]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": entries[:2]}
    refused = world.client.post("/fhir", content=orjson.dumps(transaction), headers=headers)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[1].request"]


def test_researcher_gets_de_identified_resources(world: World) -> None:
    reply = world.client.get(f"/fhir/Patient/{world.ids['p1']}", headers=world.headers("researcher"))
    patient = reply.json()
    assert reply.status_code == 200
    assert "name" not in patient and "identifier" not in patient
    assert patient["birthDate"] == "1970"
    assert {"code": "REDACTED"}.items() <= patient["meta"]["security"][-1].items()
    found = world.client.get("/fhir/Patient", headers=world.headers("researcher")).json()
    assert all("name" not in e["resource"] for e in found["entry"])


def test_break_glass_needs_a_reason_is_flagged_and_expires(world: World) -> None:
    p2 = world.ids["p2"]
    headers = world.headers("clin_a")
    assert world.client.get(f"/fhir/Patient/{p2}", headers=headers).status_code == 404
    refused = world.client.post(
        "/auth/break-glass", json={"patient": f"Patient/{p2}", "purposeOfUse": "BTG"}, headers=headers
    )
    assert refused.status_code == 400
    wrong_purpose = {"patient": f"Patient/{p2}", "purposeOfUse": "TREAT", "reason": "unconscious in the ED"}
    assert world.client.post("/auth/break-glass", json=wrong_purpose, headers=headers).status_code == 400
    not_clinician = {"patient": f"Patient/{p2}", "purposeOfUse": "BTG", "reason": "curious"}
    assert (
        world.client.post("/auth/break-glass", json=not_clinician, headers=world.headers("app_p1")).status_code == 403
    )
    grant = world.client.post(
        "/auth/break-glass",
        json={"patient": f"Patient/{p2}", "purposeOfUse": "BTG", "reason": "unconscious in the ED"},
        headers=headers,
    )
    assert grant.status_code == 201, grant.text
    assert grant.json()["review"] == "pending"
    opened = world.client.get(f"/fhir/Patient/{p2}", headers=headers)
    assert opened.status_code == 200 and opened.headers["x-break-glass"] == "flagged"
    assert world.client.get(f"/fhir/Patient/{world.ids['p1']}", headers=headers).headers.get("x-break-glass") is None
    with sqlite3.connect(world.data_dir / "auth" / "break_glass.db") as ledger:  # the hour passes
        ledger.execute("UPDATE grants SET expires = 0 WHERE grant_id = ?", (grant.json()["grant"],))
    assert world.client.get(f"/fhir/Patient/{p2}", headers=headers).status_code == 404


# -- leak probes through _include, _revinclude, _history and $everything -------------------------------------


def _hidden(world: World, who: str) -> tuple[set[str], list[str]]:
    """Ids of the world's resources in compartments ``who`` may not see, and their identifying values."""
    if who == "emr_patient_only":  # every Patient of its tenant, no other type
        return {world.ids[f"{p}-{kind}"] for p in PATIENTS for kind in ("lab", "vital")}, []
    hidden = [p for p in PATIENTS if not sees(who, p)]
    ids = {world.ids[key] for p in hidden for key in (p, f"{p}-lab", f"{p}-vital")}
    if who == "app_p1_lab":
        ids.add(world.ids["p1-vital"])  # its scope grants laboratory Observations only
    return ids, [text for p in hidden for text in (f"Fam{p}", f"MRN-{p}")]


def _returned(reply: Any) -> set[str]:
    body = reply.json()
    return {e["resource"]["id"] for e in body.get("entry", []) if "resource" in e} | (
        {body["id"]} if body.get("resourceType") not in ("Bundle", "OperationOutcome") else set()
    )


def _assert_no_leak(world: World, who: str, reply: Any) -> set[str]:
    hidden_ids, hidden_text = _hidden(world, who)
    if reply.status_code != 200:
        assert reply.status_code in (403, 404), reply.text
        assert reply.json()["resourceType"] == "OperationOutcome"
        assert not any(text in reply.text for text in hidden_text)
        return set()
    returned = _returned(reply)
    assert not returned & hidden_ids, (who, returned & hidden_ids)
    assert not any(text in reply.text for text in hidden_text), who
    return returned


@pytest.mark.parametrize("who", CALLERS)
def test_include_and_revinclude_never_bring_in_hidden_resources(world: World, who: str) -> None:
    included = world.client.get(
        "/fhir/Observation", params={"_include": "Observation:subject"}, headers=world.headers(who)
    )
    revincluded = world.client.get(
        "/fhir/Patient", params={"_revinclude": "Observation:subject"}, headers=world.headers(who)
    )
    got = _assert_no_leak(world, who, included) | _assert_no_leak(world, who, revincluded)
    if who == "clin_a":  # what it may see does come back: its patient and that patient's Observations
        assert {world.ids["p1"], world.ids["p1-lab"], world.ids["p1-vital"]} <= got
    if who in OTHER_TENANT | NO_CLINICAL:
        assert included.status_code == revincluded.status_code == 403


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("patient", PATIENTS)
def test_instance_history_answers_like_a_read(world: World, who: str, patient: str) -> None:
    instance = world.client.get(f"/fhir/Patient/{world.ids[patient]}/_history", headers=world.headers(who))
    _assert_no_leak(world, who, instance)
    assert instance.status_code == expected_read(who, "Patient", patient), instance.text


@pytest.mark.parametrize("who", CALLERS)
def test_type_history_holds_only_visible_versions(world: World, who: str) -> None:
    typed = world.client.get("/fhir/Observation/_history", headers=world.headers(who))
    got = _assert_no_leak(world, who, typed)
    if expected_count(who) is None:
        assert typed.status_code == 403
        return
    kinds = ("lab",) if who == "app_p1_lab" else ("lab", "vital")
    visible = {world.ids[f"{p}-{kind}"] for p in PATIENTS if sees(who, p) for kind in kinds}
    assert visible and visible <= got


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("patient", PATIENTS)
def test_everything_stays_inside_the_callers_compartments(world: World, who: str, patient: str) -> None:
    reply = world.client.get(f"/fhir/Patient/{world.ids[patient]}/$everything", headers=world.headers(who))
    got = _assert_no_leak(world, who, reply)
    if who == "emr_patient_only":  # the Patient itself, none of the Observations its scope leaves out
        assert reply.status_code == 200 and got == {world.ids[patient]}
    elif expected_read(who, "Patient", patient) == 200:
        assert reply.status_code == 200, reply.text
        assert {world.ids[patient], world.ids[f"{patient}-lab"], world.ids[f"{patient}-vital"]} <= got
        others = {world.ids[key] for p in PATIENTS if p != patient for key in (p, f"{p}-lab", f"{p}-vital")}
        assert not got & others  # another patient's compartment is never part of this one's
    else:
        assert reply.status_code in (403, 404)
