"""``Patient/$match``: candidates from the enterprise patient index, as a scored searchset."""

from __future__ import annotations

from typing import Any

import orjson

from ingest.access import Access
from ingest.empi import WEIGHTS, PatientIndex
from ingest.errors import IngestError, InvalidInputError, Issue
from ingest.reads import ResourceReads

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
_MAX_SCORE = sum(WEIGHTS.values())


def parse_match(params: Any) -> tuple[dict[str, Any], int, bool]:
    """The Patient, ``count`` and ``onlyCertainMatches`` of a $match Parameters (or a bare Patient)."""
    if isinstance(params, dict) and params.get("resourceType") == "Patient":
        return params, 10, False
    if not isinstance(params, dict) or params.get("resourceType") != "Parameters":
        raise InvalidInputError("bad $match input", [Issue("invalid", "the body must be a Parameters resource")])
    patient, count, only = None, 10, False
    for param in params.get("parameter") or []:
        name = param.get("name") if isinstance(param, dict) else None
        if name == "resource" and isinstance(param.get("resource"), dict):
            patient = param["resource"]
        elif name == "count" and isinstance(param.get("valueInteger"), int):
            count = max(1, min(param["valueInteger"], 100))
        elif name == "onlyCertainMatches":
            only = param.get("valueBoolean") is True
    if patient is None or patient.get("resourceType") != "Patient":
        raise InvalidInputError(
            "bad $match input",
            [Issue("required", "parameter resource (a Patient) is required", ("Parameters.parameter",))],
        )
    return patient, count, only


def match_bundle(params: Any, index: PatientIndex, reads: ResourceReads, access: Access, base: str) -> dict[str, Any]:
    """The searchset of candidates the caller may see, best first, with score and match grade."""
    patient, count, only_certain = parse_match(params)
    entries = []
    for candidate in index.candidates(patient, limit=count):
        if only_certain and candidate.grade != "certain":
            continue
        try:
            stored = reads.read("Patient", candidate.patient_id, access)
        except IngestError:  # gone, or not the caller's to see: not a candidate for them
            continue
        assert stored.body is not None
        entries.append(
            {
                "fullUrl": f"{base}/Patient/{candidate.patient_id}",
                "resource": orjson.Fragment(stored.body),
                "search": {
                    "mode": "match",
                    "score": round(min(candidate.score / _MAX_SCORE, 1.0), 3),
                    "extension": [{"url": MATCH_GRADE, "valueCode": candidate.grade}],
                },
            }
        )
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
