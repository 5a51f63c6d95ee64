"""The contract every registered EMR adapter keeps, and the normalization helpers they share."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest import emr_adapters
from ingest.emr_adapters import AdapterContext
from ingest.emr_adapters.bundle import RAW_HASH_SYSTEM
from ingest.emr_adapters.cerner.adapter import repair_div
from ingest.emr_adapters.epic.adapter import epic_system
from ingest.emr_adapters.normalize import address, code_system, hl7_datetime, phone, ucum
from ingest.errors import IngestError
from ingest.fhir_types import is_supported
from tests.fixtures.data import DATA, synthea_paths

SAMPLE: dict[str, Path] = {
    "fhir": synthea_paths()[0],
    "epic": DATA / "emr" / "epic" / "patient_resource__RESOURCE.json",
    "cerner": DATA / "emr" / "cerner" / "searchset-patient-observation.json",
    "athena": DATA / "emr" / "athena" / "subscription-notification-patient.json",
    "hl7v2": DATA / "hl7v2" / "ORU-R01-RMGEAD.hl7",
}
MEDIA = {"hl7v2": "x-application/hl7-v2+er7"}


def test_every_registered_adapter_has_a_contract_sample() -> None:
    assert set(emr_adapters.names()) == set(SAMPLE)


def _normalize(name: str, raw: bytes, context: AdapterContext) -> tuple[dict[str, Any], list[str]]:
    normalized = emr_adapters.load(name).normalize(raw, context)
    return orjson.loads(normalized.bundle), normalized.warnings


@pytest.mark.parametrize("name", emr_adapters.names())
def test_adapter_normalizes_its_sample_to_a_transaction_with_provenance(name: str) -> None:
    adapter = emr_adapters.load(name)
    assert adapter.name == name and adapter.version
    raw = b"\xef\xbb\xbf" + SAMPLE[name].read_bytes()
    assert adapter.recognizes(raw, MEDIA.get(name, "application/fhir+json"))
    bundle, warnings = _normalize(name, raw, AdapterContext.ephemeral())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert all(isinstance(w, str) for w in warnings)
    resources = [e["resource"] for e in bundle["entry"] if "resource" in e]
    assert all(is_supported(r["resourceType"]) for r in resources)
    provenance = resources[-1]
    assert provenance["resourceType"] == "Provenance"
    assert provenance["agent"][0]["who"]["identifier"]["value"] == f"{name}/{adapter.version}"
    what = provenance["entity"][0]["what"]["identifier"]
    assert what == {"system": RAW_HASH_SYSTEM, "value": hashlib.sha256(raw).hexdigest()}
    targets = {t["reference"] for t in provenance["target"]}
    written = {e.get("fullUrl") or e["request"]["url"] for e in bundle["entry"][:-1]}
    assert targets == written and targets


@pytest.mark.parametrize("name", emr_adapters.names())
def test_adapter_is_deterministic_for_the_same_context(name: str) -> None:
    raw = SAMPLE[name].read_bytes()
    context = AdapterContext.ephemeral()
    first, _ = _normalize(name, raw, context)
    second, _ = _normalize(name, raw, context)
    urls = [e["request"]["url"] for e in first["entry"]]
    assert urls == [e["request"]["url"] for e in second["entry"]]
    put_ids = [u for u in urls if "/" in u]
    assert put_ids, "updates land on stable ids, so a replay corrects in place"


@pytest.mark.parametrize("name", emr_adapters.names())
@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe\x00garbage", b"{not json", b"[1, 2]", b"MSH|"])
def test_adapter_rejects_garbage_with_an_ingest_error_never_a_crash(name: str, garbage: bytes) -> None:
    with pytest.raises(IngestError) as caught:
        emr_adapters.load(name).normalize(garbage, AdapterContext.ephemeral())
    assert caught.value.issues and caught.value.code


def test_unknown_adapter_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        emr_adapters.load("no-such-emr")


def test_fhir_adapter_repairs_clear_stu3_spellings_and_is_strict_otherwise() -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "meta": {"versionId": 3},
        "clinicalStatus": "active",
        "assertedDate": "2020-01-02",
        "context": {"reference": "Encounter/e1"},
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "SCT", "code": "44054006"}]},
    }
    bundle, warnings = _normalize("fhir", orjson.dumps(condition), AdapterContext.ephemeral())
    fixed = bundle["entry"][0]["resource"]
    assert fixed["meta"]["versionId"] == "3" and fixed["recordedDate"] == "2020-01-02"
    assert fixed["clinicalStatus"]["coding"][0]["code"] == "active"
    assert fixed["encounter"] == {"reference": "Encounter/e1"} and "context" not in fixed
    assert fixed["code"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert len(warnings) == 4
    with pytest.raises(IngestError, match="SubscriptionStatus"):
        _normalize("fhir", b'{"resourceType": "SubscriptionStatus", "status": "active"}', AdapterContext.ephemeral())


def test_athena_skips_r5_types_with_a_warning() -> None:
    bundle, warnings = _normalize("athena", SAMPLE["athena"].read_bytes(), AdapterContext.ephemeral())
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert "SubscriptionStatus" not in types and types[-1] == "Provenance"
    assert any("SubscriptionStatus" in w for w in warnings)


def test_cerner_unwraps_searchsets_and_repairs_or_drops_narratives() -> None:
    bundle, warnings = _normalize("cerner", SAMPLE["cerner"].read_bytes(), AdapterContext.ephemeral())
    resources = {
        e["resource"]["id"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] != "Provenance"
    }
    assert set(resources) == {"12724066", "L-197392513", "L-197392514"}  # the outcome entry is gone
    assert resources["12724066"]["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert resources["L-197392513"]["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml"><p>')
    assert "text" not in resources["L-197392514"]
    assert resources["12724066"]["meta"]["versionId"] == "14"
    assert any("dropped" in w for w in warnings)
    assert repair_div("<div><!DOCTYPE x [<!ENTITY a 'b'>]>&a;</div>") is None


def test_epic_oids_become_canonical_systems_and_keep_their_origin() -> None:
    assert epic_system("urn:oid:1.2.840.114350.1.13.20.3.7.2.698084") == "urn:fhirlake:epic:20.3:record:698084"
    assert epic_system("urn:oid:2.16.840.1.113883.4.1") is None
    bundle, _ = _normalize("epic", SAMPLE["epic"].read_bytes(), AdapterContext.ephemeral())
    patient = bundle["entry"][0]["resource"]
    systems = {i.get("system") for i in patient["identifier"]}
    assert "urn:fhirlake:epic:20.3:record:698084" in systems
    assert "http://hl7.org/fhir/sid/us-ssn" in systems
    assert not any(s and s.startswith("urn:oid:1.2.840.114350") for s in systems)
    mrn = next(i for i in patient["identifier"] if i.get("system") == "urn:fhirlake:epic:20.3:record:698084")
    assert mrn["extension"][0]["valueUri"] == "urn:oid:1.2.840.114350.1.13.20.3.7.2.698084"
    assert patient["gender"] == "female"
    assert any("legal-sex" in e["url"] for e in patient["extension"])  # Epic extensions kept


def test_normalization_helpers() -> None:
    assert code_system("LN") == "http://loinc.org" and code_system("SCT") == "http://snomed.info/sct"
    assert code_system("RXNORM") == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert (
        code_system("I10") == "http://hl7.org/fhir/sid/icd-10-cm"
        and code_system("CVX") == "http://hl7.org/fhir/sid/cvx"
    )
    assert code_system("CPT") == "http://www.ama-assn.org/go/cpt" and code_system("HL70005").endswith("v2-0005")
    assert code_system("whatever") is None
    assert ucum("mg/dl") == "mg/dL" and ucum("beats/min") == "/min" and ucum("furlongs") is None
    assert hl7_datetime("20020215093000+0600") == ("2002-02-15T09:30:00+06:00", True)
    assert hl7_datetime("201410060830") == ("2014-10-06T08:30:00+00:00", False)
    assert hl7_datetime("19620320") == ("1962-03-20", True)
    assert phone("(206)334-5232") == "+12063345232" and phone("12") is None
    assert address({"state": "oh", "postalCode": "352921234", "country": "USA", "city": " Ann  Arbor "}) == {
        "state": "OH", "postalCode": "35292-1234", "country": "US", "city": "Ann Arbor"
    }  # fmt: skip
