"""PV1, OBR/OBX and RXA to Encounter, DiagnosticReport/Observation and Immunization."""

from __future__ import annotations

import re
from typing import Any

from hl7.containers import Segment

from ingest.emr_adapters import AdapterContext
from ingest.emr_adapters.hl7v2.message import Parsed, field
from ingest.emr_adapters.normalize import CVX, code_system, hl7_datetime, quantity

_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_CLASS = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC", "R": "AMB", "B": "AMB", "C": "AMB", "N": "AMB"}
_ENCOUNTER_STATUS = {"A01": "in-progress", "A02": "in-progress", "A03": "finished", "A04": "arrived",
                     "A05": "planned", "A06": "in-progress", "A07": "in-progress", "A11": "cancelled",
                     "A13": "in-progress", "A14": "planned"}  # fmt: skip
_RESULT_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "registered", "I": "registered",
                  "X": "cancelled", "D": "entered-in-error", "W": "entered-in-error", "A": "amended",
                  "S": "partial"}  # fmt: skip
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[-_]\s*(-?\d+(?:\.\d+)?)\s*$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_ABSENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}]}


class Notes:
    """PHI-free warnings collected while mapping (segment and field positions only)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def when(value: str, notes: Notes, where: str) -> str | None:
    text, zoned = hl7_datetime(value)
    if text and not zoned:
        notes.add(f"{where}: time without a UTC offset read as UTC")
    return text


def concept(segment: Segment, number: int, notes: Notes, where: str, rep: int = 1) -> dict[str, Any] | None:
    """A CE/CWE field as a CodeableConcept (primary and alternate codings, canonical systems)."""
    codings = []
    for first in (1, 4):
        code = field(segment, number, rep, first)
        if not code:
            continue
        raw_system = field(segment, number, rep, first + 2)
        coding: dict[str, Any] = {"code": code}
        system = code_system(raw_system)
        if system:
            coding["system"] = system
        elif raw_system:
            notes.add(f"{where}: coding system not mapped to a canonical URI")
        display = field(segment, number, rep, first + 1)
        if display:
            coding["display"] = display
        codings.append(coding)
    text = field(segment, number, rep, 2)
    if not codings:
        return {"text": text} if text else None
    return {"coding": codings, **({"text": text} if text else {})}


def to_encounter(
    pv1: Segment, parsed: Parsed, patient_ref: str, context: AdapterContext, notes: Notes
) -> dict[str, Any]:
    visit = field(pv1, 19)
    key = f"{parsed.facility}|visit|{visit}" if visit else f"{patient_ref}|{field(pv1, 44) or parsed.control_id}"
    patient_class = field(pv1, 2).upper()
    status = _ENCOUNTER_STATUS.get(parsed.trigger, "in-progress")
    if field(pv1, 45) and status != "cancelled":
        status = "finished"
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": context.stable_id("Encounter", key),
        "status": status,
        "class": {"system": _ACT, "code": _CLASS.get(patient_class, "AMB")},
        "subject": {"reference": patient_ref},
    }
    if patient_class not in _CLASS:
        notes.add("PV1-2: patient class not mapped; ambulatory assumed")
    if visit:
        encounter["identifier"] = [
            {"system": f"urn:fhirlake:hl7v2:visit:{context.stable_id('Facility', parsed.facility)}", "value": visit}
        ]
    period = {k: v for k, v in (("start", when(field(pv1, 44), notes, "PV1-44")),
                                ("end", when(field(pv1, 45), notes, "PV1-45"))) if v}  # fmt: skip
    if period:
        encounter["period"] = period
    where = " ".join(p for p in (field(pv1, 3, 1, 1, 1), field(pv1, 3, 1, 2), field(pv1, 3, 1, 3)) if p)
    if where:
        encounter["location"] = [{"location": {"display": where}}]
    return encounter


def to_report(obr: Segment, obxs: list[Segment], parsed: Parsed, patient_ref: str, context: AdapterContext,
              notes: Notes) -> list[dict[str, Any]]:  # fmt: skip
    """One DiagnosticReport and its Observations (LOINC codes, UCUM units)."""
    order = field(obr, 3) or field(obr, 2) or f"{parsed.control_id}/{field(obr, 1)}"
    report_key = f"{parsed.facility}|{order}"
    effective = when(field(obr, 7), notes, "OBR-7")
    observations = [
        o
        for i, x in enumerate(obxs, 1)
        if (o := to_observation(x, i, report_key, patient_ref, effective, context, notes))
    ]
    code = concept(obr, 4, notes, "OBR-4") or {"text": "unspecified"}
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": context.stable_id("DiagnosticReport", report_key),
        "status": _RESULT_STATUS.get(field(obr, 25).upper(), "final"),
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
        "code": code,
        "subject": {"reference": patient_ref},
    }
    if effective:
        report["effectiveDateTime"] = effective
    issued = when(field(obr, 22), notes, "OBR-22")
    if issued and "T" in issued:
        report["issued"] = issued
    if observations:
        report["result"] = [{"reference": f"Observation/{o['id']}"} for o in observations]
    return [report, *observations]


def to_observation(obx: Segment, index: int, report_key: str, patient_ref: str, effective: str | None,
                   context: AdapterContext, notes: Notes) -> dict[str, Any] | None:  # fmt: skip
    where = f"OBX[{index}]"
    code = concept(obx, 3, notes, f"{where}-3")
    if code is None:
        notes.add(f"{where}-3: observation without a code skipped")
        return None
    set_id = field(obx, 1) or str(index)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": context.stable_id("Observation", f"{report_key}|{set_id}|{field(obx, 3)}|{field(obx, 4)}"),
        "status": _RESULT_STATUS.get(field(obx, 11).upper(), "final"),
        "category": [{"coding": [{"system": _CATEGORY, "code": "laboratory"}]}],
        "code": code,
        "subject": {"reference": patient_ref},
    }
    if obs["status"] == "partial":
        obs["status"] = "preliminary"
    _value(obs, obx, notes, where)
    moment = when(field(obx, 14), notes, f"{where}-14") or effective
    if moment:
        obs["effectiveDateTime"] = moment
    limits = _RANGE.match(field(obx, 7))
    if limits:
        unit = field(obx, 6)
        obs["referenceRange"] = [
            {"low": quantity(_num(limits.group(1)), unit)[0], "high": quantity(_num(limits.group(2)), unit)[0]}
        ]
    flag = field(obx, 8).upper()
    if flag:
        obs["interpretation"] = [{"coding": [{"system": _INTERPRETATION, "code": flag}]}]
    return obs


def _num(text: str) -> float | int:
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _value(obs: dict[str, Any], obx: Segment, notes: Notes, where: str) -> None:
    kind = field(obx, 2).upper()
    raw = field(obx, 5)
    unit = field(obx, 6)
    if kind in ("NM", "SN"):
        comparator, number = (field(obx, 5, 1, 1), field(obx, 5, 1, 2)) if kind == "SN" else ("", raw)
        if not _NUMBER.match(number or ""):
            if raw:
                notes.add(f"{where}-5: numeric value not a number; kept as text")
                obs["valueString"] = raw
            else:
                obs["dataAbsentReason"] = _ABSENT
            return
        value, mapped = quantity(_num(number), unit)
        if comparator in ("<", "<=", ">", ">="):
            value["comparator"] = comparator
        if not mapped:
            notes.add(f"{where}-6: unit not mapped to UCUM; kept as text")
        obs["valueQuantity"] = value
    elif kind in ("CE", "CWE", "CNE", "CF"):
        value_cc = concept(obx, 5, notes, f"{where}-5")
        if value_cc:
            obs["valueCodeableConcept"] = value_cc
    elif kind in ("DT", "TS", "DTM"):
        moment = when(raw, notes, f"{where}-5")
        if moment:
            obs["valueDateTime"] = moment
    elif raw:
        obs["valueString"] = raw
    if not any(k.startswith("value") for k in obs):
        obs["dataAbsentReason"] = _ABSENT


_COMPLETION = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}


def to_immunization(rxa: Segment, index: int, order: str, parsed: Parsed, patient_ref: str, context: AdapterContext,
                    notes: Notes) -> dict[str, Any] | None:  # fmt: skip
    where = f"RXA[{index}]"
    vaccine = concept(rxa, 5, notes, f"{where}-5")
    occurred = when(field(rxa, 3), notes, f"{where}-3")
    if vaccine is None or occurred is None:
        notes.add(f"{where}: immunization without vaccine code or date skipped")
        return None
    if not any(c.get("system") == CVX for c in vaccine.get("coding", [])):
        notes.add(f"{where}-5: no CVX code; vaccine kept with its given coding")
    status = _COMPLETION.get(field(rxa, 20).upper(), "completed")
    if field(rxa, 21).upper() == "D":
        status = "entered-in-error"
    imm: dict[str, Any] = {
        "resourceType": "Immunization",
        "id": context.stable_id("Immunization", f"{parsed.facility}|{order}|{index}|{field(rxa, 5)}"),
        "status": status,
        "vaccineCode": vaccine,
        "patient": {"reference": patient_ref},
        "occurrenceDateTime": occurred,
        "primarySource": field(rxa, 9) in ("", "00"),
    }
    amount = field(rxa, 6)
    if _NUMBER.match(amount) and amount != "999":
        imm["doseQuantity"] = quantity(_num(amount), field(rxa, 7) or None)[0]
    for number, key in ((15, "lotNumber"),):
        value = field(rxa, number)
        if value:
            imm[key] = value
    expires = field(rxa, 16)
    if expires[:8].isdigit():
        imm["expirationDate"] = f"{expires[:4]}-{expires[4:6]}-{expires[6:8]}"
    maker = field(rxa, 17, 1, 2) or field(rxa, 17)
    if maker:
        imm["manufacturer"] = {"display": maker}
    return imm
