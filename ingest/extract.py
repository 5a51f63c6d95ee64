"""Typed analytics columns and search keys pulled out of a validated resource.

Pure functions over the resource dict: they run in the validation worker
processes, next to validation, so the request path never walks a resource twice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from security.policy import field_policy

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
    effective_year: int | None = None  # the year only: finer dates are PHI (sealed in the phi column)
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
            effective = int(raw[:4]) if raw[:4].isdigit() else None
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
        effective_year=effective,
        value_num=value_num,
        value_unit=value_unit,
    )


def patient_reference(resource: dict[str, object]) -> str | None:
    """The logical id of the patient whose compartment holds this resource, if any.

    A conditional reference (``Patient?identifier=…``) is returned as written;
    the transaction resolves it.
    """
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return str(rid) if rid else None
    for element in _PATIENT_ELEMENTS:
        ref = resource.get(element)
        if isinstance(ref, dict):
            target = ref.get("reference")
            if isinstance(target, str) and target.startswith("Patient/"):
                return target[len("Patient/") :].split("/", 1)[0]
            if isinstance(target, str) and target.startswith("Patient?"):
                return target
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


def phi_fields(resource: dict[str, Any]) -> tuple[tuple[str, bytes], ...]:
    """The elements the field policy seals one by one, serialized: ``(element, json)``."""
    rtype = str(resource["resourceType"])
    return tuple((name, orjson.dumps(resource[name])) for name in field_policy().of(rtype).fields if name in resource)


def search_values(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Values of the blind-indexed ``phone`` and ``email`` parameters: ``(param, value)``.

    The other search parameters are keyed in ``ingest/search_index.py``.
    """
    blind = field_policy().of(str(resource["resourceType"])).blind
    out: list[tuple[str, str]] = []
    telecom = resource.get("telecom")
    for point in telecom if isinstance(telecom, list) else ():
        if isinstance(point, dict) and isinstance(point.get("value"), str):
            param = {"phone": "phone", "sms": "phone", "email": "email"}.get(str(point.get("system")))
            if param in blind:
                out.append((param, point["value"]))
    return tuple(dict.fromkeys(out))


def categories(resource: dict[str, Any]) -> str | None:
    """The resource's category codings as one space-delimited string (``" code system|code … "``).

    Category codes are not PHI; they are kept in clear so that SMART scopes with
    ``?category=`` constraints can be enforced in SQL.
    """
    raw = resource.get("category")
    concepts = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    out: list[str] = []
    for concept in concepts:
        for coding in concept.get("coding") or () if isinstance(concept, dict) else ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str) and " " not in coding["code"]:
                out += [coding["code"], f"{coding.get('system') or ''}|{coding['code']}"]
    return f" {' '.join(dict.fromkeys(out))} " if out else None


def _ref_id(ref: object, rtype: str) -> str | None:
    if isinstance(ref, dict):
        target = ref.get("reference")
        if isinstance(target, str) and target.startswith(f"{rtype}/"):
            return target[len(rtype) + 1 :].split("/", 1)[0]
    return None


def access_refs(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Who cares for the patient (ABAC attributes): ``("org", id)`` and ``("member", "Practitioner/id")``.

    From ``Patient.managingOrganization`` and ``generalPractitioner``, and from a
    ``CareTeam``'s managing organizations and participants.
    """
    rtype = resource.get("resourceType")
    out: list[tuple[str, str]] = []
    if rtype == "Patient":
        org = _ref_id(resource.get("managingOrganization"), "Organization")
        if org:
            out.append(("org", org))
        for ref in resource.get("generalPractitioner") or ():
            if (rid := _ref_id(ref, "Practitioner")) is not None:
                out.append(("member", f"Practitioner/{rid}"))
            elif (rid := _ref_id(ref, "Organization")) is not None:
                out.append(("org", rid))
    elif rtype == "CareTeam":
        for ref in resource.get("managingOrganization") or ():
            if (rid := _ref_id(ref, "Organization")) is not None:
                out.append(("org", rid))
        for participant in resource.get("participant") or ():
            member = participant.get("member") if isinstance(participant, dict) else None
            if (rid := _ref_id(member, "Practitioner")) is not None:
                out.append(("member", f"Practitioner/{rid}"))
            elif (rid := _ref_id(member, "Organization")) is not None:
                out.append(("org", rid))
    return tuple(dict.fromkeys(out))
