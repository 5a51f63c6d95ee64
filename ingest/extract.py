"""Typed analytics columns and search keys pulled out of a validated resource.

Pure functions over the resource dict: they run in the validation worker
processes, next to validation, so the request path never walks a resource twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

_EFFECTIVE: dict[str, tuple[str, ...]] = {
    "Observation": ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "Encounter": ("period.start",),
    "Condition": ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
    "Procedure": ("performedDateTime", "performedPeriod.start"),
    "Immunization": ("occurrenceDateTime",),
    "MedicationRequest": ("authoredOn",),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod.start"),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
    "AllergyIntolerance": ("recordedDate", "onsetDateTime"),
    "CarePlan": ("period.start", "created"),
    "CareTeam": ("period.start",),
    "Claim": ("created",),
    "ExplanationOfBenefit": ("created",),
    "DocumentReference": ("date",),
    "ServiceRequest": ("authoredOn",),
    "ImagingStudy": ("started",),
    "Goal": ("startDate",),
}

_CODE: dict[str, tuple[str, ...]] = {
    "Immunization": ("vaccineCode",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationAdministration": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "Encounter": ("type",),
    "Claim": ("type",),
    "ExplanationOfBenefit": ("type",),
    "CarePlan": ("category",),
    "CareTeam": ("category",),
    "DocumentReference": ("type",),
    "Goal": ("description",),
}

_STATUS_CONCEPT = {"Condition": "clinicalStatus", "AllergyIntolerance": "clinicalStatus"}
_PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")


class Columns(NamedTuple):
    status: str | None = None
    code_system: str | None = None
    code: str | None = None
    effective_us: int | None = None
    value_num: float | None = None
    value_unit: str | None = None


def _get(resource: dict[str, object], dotted: str) -> object:
    value: object = resource
    for part in dotted.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _first_coding(concept: object) -> tuple[str | None, str | None]:
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, list):
            for coding in codings:
                if isinstance(coding, dict) and coding.get("code"):
                    return coding.get("system"), str(coding["code"])
    return None, None


def fhir_instant_us(value: str) -> int | None:
    """Microseconds since the epoch for a FHIR date, dateTime or instant (start of a partial date)."""
    try:
        if len(value) == 4:
            moment = datetime(int(value), 1, 1, tzinfo=UTC)
        elif len(value) == 7:
            moment = datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        elif len(value) == 10:
            moment = datetime(int(value[:4]), int(value[5:7]), int(value[8:10]), tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp() * 1_000_000)


def extract_columns(resource: dict[str, object]) -> Columns:
    rtype = str(resource["resourceType"])
    status = resource.get("status")
    if rtype in _STATUS_CONCEPT:
        status = _first_coding(resource.get(_STATUS_CONCEPT[rtype]))[1]
    elif rtype == "Goal":
        status = resource.get("lifecycleStatus")
    system, code = None, None
    for element in _CODE.get(rtype, ("code",)):
        system, code = _first_coding(resource.get(element))
        if code is not None:
            break
    effective = None
    for path in _EFFECTIVE.get(rtype, ()):
        raw = _get(resource, path)
        if isinstance(raw, str):
            effective = fhir_instant_us(raw)
            break
    value_num, value_unit = None, None
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
        value_num = float(quantity["value"])
        unit = quantity.get("unit") or quantity.get("code")
        value_unit = str(unit) if unit is not None else None
    return Columns(
        status=status if isinstance(status, str) else None,
        code_system=system,
        code=code,
        effective_us=effective,
        value_num=value_num,
        value_unit=value_unit,
    )


def patient_reference(resource: dict[str, object]) -> str | None:
    """The logical id of the patient whose compartment holds this resource, if any."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return str(rid) if rid else None
    for element in _PATIENT_ELEMENTS:
        ref = resource.get(element)
        if isinstance(ref, dict):
            target = ref.get("reference")
            if isinstance(target, str) and target.startswith("Patient/"):
                return target[len("Patient/") :].split("/", 1)[0]
    return None


def identifiers(resource: dict[str, object]) -> tuple[tuple[str, str], ...]:
    """``(system, value)`` pairs of ``Resource.identifier`` (system '' when absent)."""
    raw = resource.get("identifier")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        return ()
    out = []
    for ident in raw:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            out.append((str(ident.get("system") or ""), ident["value"]))
    return tuple(out)
