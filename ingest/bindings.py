"""Required value-set bindings the R4B models do not enforce.

The ``fhir.resources`` models check structure and primitive formats but accept
any string in a ``code`` element. These are the R4 *required* bindings of the
status-like elements of the common clinical resources; a value outside them
makes the resource invalid (HTTP 400), as the specification requires.
"""

from __future__ import annotations

from collections.abc import Iterator

_GENDER = frozenset({"male", "female", "other", "unknown"})
_REQUEST_STATUS = frozenset({"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"})
_FM_STATUS = frozenset({"active", "cancelled", "draft", "entered-in-error"})
_CLAIM_USE = frozenset({"claim", "preauthorization", "predetermination"})

# element -> allowed codes, for elements of type code
CODE_BINDINGS: dict[str, dict[str, frozenset[str]]] = {
    "Patient": {"gender": _GENDER},
    "Practitioner": {"gender": _GENDER},
    "RelatedPerson": {"gender": _GENDER},
    "Person": {"gender": _GENDER},
    "Observation": {
        "status": frozenset(
            {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
        )
    },
    "DiagnosticReport": {
        "status": frozenset(
            {
                "registered",
                "partial",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "appended",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "Encounter": {
        "status": frozenset(
            {
                "planned",
                "arrived",
                "triaged",
                "in-progress",
                "onleave",
                "finished",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "Procedure": {
        "status": frozenset(
            {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
        )
    },
    "MedicationRequest": {
        "status": frozenset(
            {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}
        ),
        "intent": frozenset(
            {"proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}
        ),
    },
    "MedicationStatement": {
        "status": frozenset(
            {"active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"}
        )
    },
    "MedicationAdministration": {
        "status": frozenset(
            {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}
        )
    },
    "Immunization": {"status": frozenset({"completed", "entered-in-error", "not-done"})},
    "AllergyIntolerance": {
        "type": frozenset({"allergy", "intolerance"}),
        "criticality": frozenset({"low", "high", "unable-to-assess"}),
    },
    "CarePlan": {"status": _REQUEST_STATUS, "intent": frozenset({"proposal", "plan", "order", "option"})},
    "CareTeam": {"status": frozenset({"proposed", "active", "suspended", "inactive", "entered-in-error"})},
    "ServiceRequest": {
        "status": _REQUEST_STATUS,
        "intent": frozenset(
            {
                "proposal",
                "plan",
                "directive",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
    },
    "Goal": {
        "lifecycleStatus": frozenset(
            {
                "proposed",
                "planned",
                "accepted",
                "active",
                "on-hold",
                "completed",
                "cancelled",
                "entered-in-error",
                "rejected",
            }
        )
    },
    "DocumentReference": {"status": frozenset({"current", "superseded", "entered-in-error"})},
    "Coverage": {"status": _FM_STATUS},
    "Claim": {"status": _FM_STATUS, "use": _CLAIM_USE},
    "ExplanationOfBenefit": {
        "status": _FM_STATUS,
        "use": _CLAIM_USE,
        "outcome": frozenset({"queued", "complete", "error", "partial"}),
    },
    "Device": {"status": frozenset({"active", "inactive", "entered-in-error", "unknown"})},
    "ImagingStudy": {"status": frozenset({"registered", "available", "cancelled", "entered-in-error", "unknown"})},
}

_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
_ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

# element -> (code system, allowed codes), for CodeableConcept elements with a required binding
CONCEPT_BINDINGS: dict[str, dict[str, tuple[str, frozenset[str]]]] = {
    "Condition": {
        "clinicalStatus": (
            _CONDITION_CLINICAL,
            frozenset({"active", "recurrence", "relapse", "inactive", "remission", "resolved"}),
        ),
        "verificationStatus": (
            _CONDITION_VERIFICATION,
            frozenset({"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}),
        ),
    },
    "AllergyIntolerance": {
        "clinicalStatus": (_ALLERGY_CLINICAL, frozenset({"active", "inactive", "resolved"})),
        "verificationStatus": (
            _ALLERGY_VERIFICATION,
            frozenset({"unconfirmed", "confirmed", "refuted", "entered-in-error"}),
        ),
    },
}


def binding_violations(resource: dict[str, object]) -> Iterator[tuple[str, str]]:
    """Yield ``(element, reason)`` for each required binding the resource breaks.

    Reasons name the value set, never the offending value (which may be PHI).
    """
    rtype = str(resource.get("resourceType"))
    for element, allowed in CODE_BINDINGS.get(rtype, {}).items():
        value = resource.get(element)
        if value is not None and value not in allowed:
            yield element, f"code is not in the required value set ({', '.join(sorted(allowed))})"
    for element, (system, codes) in CONCEPT_BINDINGS.get(rtype, {}).items():
        concept = resource.get(element)
        if concept is None:
            continue
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list) or not any(
            isinstance(c, dict) and c.get("system") == system and c.get("code") in codes for c in codings
        ):
            yield element, f"needs a coding from {system} with one of: {', '.join(sorted(codes))}"
