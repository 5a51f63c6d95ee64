"""The search parameters of this release: US Core's set for the US Core resource types.

Each parameter names its kind and the element paths it reads. Paths are dotted
element names (lists are walked); choice types are listed one by one
(``effectiveDateTime``, ``effectivePeriod``). ``patient`` / ``subject`` of the
patient-compartment types, ``identifier``, ``phone``, ``email``, ``_id`` and
``_lastUpdated`` are answered by dedicated indexes (see ``ingest/search.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["token", "string", "date", "reference", "quantity", "special"]


@dataclass(frozen=True, slots=True)
class SearchParam:
    name: str
    kind: Kind
    paths: tuple[str, ...] = ()


def _p(name: str, kind: Kind, *paths: str) -> SearchParam:
    return SearchParam(name, kind, paths)


_NAME = ("name.family", "name.given", "name.prefix", "name.suffix", "name.text")
_ADDRESS = (
    "address.line",
    "address.city",
    "address.district",
    "address.state",
    "address.postalCode",
    "address.country",
    "address.text",
)
_ADDRESS_PARAMS = (
    _p("address", "string", *_ADDRESS),
    _p("address-city", "string", "address.city"),
    _p("address-state", "string", "address.state"),
    _p("address-postalcode", "string", "address.postalCode"),
)
_PERSON = (_p("name", "string", *_NAME), _p("family", "string", "name.family"), _p("given", "string", "name.given"))
_SPECIAL = ("_id", "_lastUpdated", "identifier")

_BY_TYPE: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        *_PERSON,
        *_ADDRESS_PARAMS,
        _p("birthdate", "date", "birthDate"),
        _p("death-date", "date", "deceasedDateTime"),
        _p("gender", "token", "gender"),
        _p("general-practitioner", "reference", "generalPractitioner"),
        _p("organization", "reference", "managingOrganization"),
        _p("phone", "special"),
        _p("email", "special"),
    ),
    "Practitioner": (*_PERSON, *_ADDRESS_PARAMS, _p("phone", "special"), _p("email", "special")),
    "Organization": (
        _p("name", "string", "name", "alias"),
        *_ADDRESS_PARAMS,
        _p("type", "token", "type"),
        _p("partof", "reference", "partOf"),
        _p("phone", "special"),
        _p("email", "special"),
    ),
    "Observation": (
        _p("category", "token", "category"),
        _p("code", "token", "code"),
        _p("date", "date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
        _p("status", "token", "status"),
        _p("value-quantity", "quantity", "valueQuantity"),
        _p("value-concept", "token", "valueCodeableConcept"),
        _p("encounter", "reference", "encounter"),
        _p("performer", "reference", "performer"),
    ),
    "Condition": (
        _p("category", "token", "category"),
        _p("clinical-status", "token", "clinicalStatus"),
        _p("verification-status", "token", "verificationStatus"),
        _p("code", "token", "code"),
        _p("onset-date", "date", "onsetDateTime", "onsetPeriod"),
        _p("abatement-date", "date", "abatementDateTime", "abatementPeriod"),
        _p("recorded-date", "date", "recordedDate"),
        _p("encounter", "reference", "encounter"),
    ),
    "Encounter": (
        _p("class", "token", "class"),
        _p("type", "token", "type"),
        _p("status", "token", "status"),
        _p("date", "date", "period"),
        _p("participant", "reference", "participant.individual"),
        _p("practitioner", "reference", "participant.individual"),
        _p("location", "reference", "location.location"),
        _p("service-provider", "reference", "serviceProvider"),
        _p("reason-code", "token", "reasonCode"),
    ),
    "MedicationRequest": (
        _p("status", "token", "status"),
        _p("intent", "token", "intent"),
        _p("authoredon", "date", "authoredOn"),
        _p("code", "token", "medicationCodeableConcept"),
        _p("medication", "reference", "medicationReference"),
        _p("encounter", "reference", "encounter"),
        _p("requester", "reference", "requester"),
    ),
    "AllergyIntolerance": (
        _p("clinical-status", "token", "clinicalStatus"),
        _p("verification-status", "token", "verificationStatus"),
        _p("code", "token", "code"),
        _p("category", "token", "category"),
        _p("criticality", "token", "criticality"),
        _p("onset", "date", "onsetDateTime", "onsetPeriod"),
        _p("date", "date", "recordedDate"),
    ),
    "Procedure": (
        _p("code", "token", "code"),
        _p("status", "token", "status"),
        _p("date", "date", "performedDateTime", "performedPeriod"),
        _p("encounter", "reference", "encounter"),
        _p("performer", "reference", "performer.actor"),
    ),
    "Immunization": (
        _p("vaccine-code", "token", "vaccineCode"),
        _p("status", "token", "status"),
        _p("date", "date", "occurrenceDateTime"),
        _p("performer", "reference", "performer.actor"),
        _p("location", "reference", "location"),
        _p("encounter", "reference", "encounter"),
    ),
    "DiagnosticReport": (
        _p("category", "token", "category"),
        _p("code", "token", "code"),
        _p("status", "token", "status"),
        _p("date", "date", "effectiveDateTime", "effectivePeriod"),
        _p("issued", "date", "issued"),
        _p("encounter", "reference", "encounter"),
        _p("result", "reference", "result"),
        _p("performer", "reference", "performer"),
    ),
    "Provenance": (_p("target", "reference", "target"), _p("agent", "reference", "agent.who")),
}

_PATIENT_ELEMENT = {"AllergyIntolerance": "patient", "Immunization": "patient"}

# Reference elements `_include` / `_revinclude` may follow: (source type, param) -> element path.
INCLUDES: dict[tuple[str, str], str] = {
    **{
        (rtype, p.name): p.paths[0]
        for rtype, params in _BY_TYPE.items()
        for p in params
        if p.kind == "reference" and len(set(p.paths)) == 1
    },
    **{
        (rtype, name): _PATIENT_ELEMENT.get(rtype, "subject")
        for rtype in _BY_TYPE
        if rtype not in ("Patient", "Practitioner", "Organization", "Provenance")
        for name in ("patient", "subject")
        if name == "patient" or rtype not in _PATIENT_ELEMENT
    },
    ("Provenance", "target"): "target",
}


def params_of(rtype: str) -> dict[str, SearchParam]:
    """Search parameters of ``rtype`` by name (besides the special ones of every type)."""
    return {p.name: p for p in _BY_TYPE.get(rtype, ())}


def indexed_types() -> list[str]:
    return sorted(_BY_TYPE)


def special_params() -> tuple[str, ...]:
    return _SPECIAL
