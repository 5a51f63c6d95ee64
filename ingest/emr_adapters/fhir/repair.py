"""Repairs of common R4B/STU3 differences whose meaning is clear; everything else is left to validation.

Each repair appends a PHI-free warning (resource type and element path only).
"""

from __future__ import annotations

from typing import Any

_GENDERS = frozenset({"male", "female", "other", "unknown"})
_STATUS_SYSTEMS = {
    ("Condition", "clinicalStatus"): "http://terminology.hl7.org/CodeSystem/condition-clinical",
    ("Condition", "verificationStatus"): "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    ("AllergyIntolerance", "clinicalStatus"): "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
    ("AllergyIntolerance", "verificationStatus"): (
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
    ),
}
# STU3 element -> R4 element, when the meaning did not change.
_RENAMES = {
    ("Condition", "assertedDate"): "recordedDate",
    ("AllergyIntolerance", "assertedDate"): "recordedDate",
    ("Immunization", "date"): "occurrenceDateTime",
}
_CONTEXT_TYPES = frozenset({"Observation", "Condition", "Procedure", "DiagnosticReport", "MedicationRequest"})


def repair(resource: dict[str, Any], warnings: list[str]) -> None:
    """Repair ``resource`` in place (see the module docstring)."""
    rtype = str(resource.get("resourceType"))
    _meta(resource, rtype, warnings)
    gender = resource.get("gender")
    if isinstance(gender, str) and gender not in _GENDERS and gender.casefold() in _GENDERS:
        resource["gender"] = gender.casefold()
        warnings.append(f"{rtype}.gender: code case repaired")
    for (owner, element), system in _STATUS_SYSTEMS.items():
        value = resource.get(element)
        if owner == rtype and isinstance(value, str):
            resource[element] = {"coding": [{"system": system, "code": value}]}
            warnings.append(f"{rtype}.{element}: STU3 code turned into an R4 CodeableConcept")
    for (owner, old), new in _RENAMES.items():
        if owner == rtype and old in resource and new not in resource:
            resource[new] = resource.pop(old)
            warnings.append(f"{rtype}.{old}: STU3 element renamed to {new}")
    _context(resource, rtype, warnings)
    if rtype == "Immunization" and isinstance(resource.get("notGiven"), bool):
        not_given = resource.pop("notGiven")
        if not_given:
            resource["status"] = "not-done"
        warnings.append("Immunization.notGiven: STU3 flag turned into status")


def _meta(resource: dict[str, Any], rtype: str, warnings: list[str]) -> None:
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("versionId"), int) and not isinstance(meta["versionId"], bool):
        meta["versionId"] = str(meta["versionId"])
        warnings.append(f"{rtype}.meta.versionId: integer accepted as an id string")


def _context(resource: dict[str, Any], rtype: str, warnings: list[str]) -> None:
    """STU3 ``context`` became ``encounter``: renamed only when it points at an Encounter."""
    context = resource.get("context")
    if rtype not in _CONTEXT_TYPES or not isinstance(context, dict) or "encounter" in resource:
        return
    reference = context.get("reference")
    if isinstance(reference, str) and reference.startswith("Encounter/"):
        resource["encounter"] = resource.pop("context")
        warnings.append(f"{rtype}.context: STU3 element renamed to encounter")
