"""PID (and MRG) to a FHIR Patient: identifiers, names, birth date, sex, addresses, phones."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hl7.containers import Segment

from ingest.emr_adapters import AdapterContext
from ingest.emr_adapters.errors import AdapterError
from ingest.emr_adapters.hl7v2.message import Parsed, field, repetitions
from ingest.emr_adapters.normalize import US_SSN, address, hl7_date, identifier_system, phone

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "B": "old"}
_ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "M": "home", "P": "home"}
_TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "temp", "EMR": "home", "ASN": "temp"}
_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"


def local_system(parsed: Parsed, authority: str) -> str:
    """The system of an identifier whose authority has no URI: scoped by the sending facility."""
    return f"urn:fhirlake:hl7v2:{quote(parsed.facility, safe='')}:{quote(authority or 'local', safe='')}"


def cx_identifier(segment: Segment, number: int, rep: int, parsed: Parsed) -> dict[str, Any] | None:
    """One CX repetition as a FHIR Identifier (system canonical when the authority is known)."""
    value = field(segment, number, rep, 1)
    if not value:
        return None
    namespace = field(segment, number, rep, 4, 1)
    universal = field(segment, number, rep, 4, 2)
    id_type = field(segment, number, rep, 5).upper()
    system = identifier_system(universal) or identifier_system(namespace)
    if system is None and id_type == "SS":
        system = US_SSN
    out: dict[str, Any] = {"system": system or local_system(parsed, namespace), "value": value}
    if id_type:
        out["type"] = {"coding": [{"system": V2_0203, "code": id_type}]}
    return out


def patient_identifiers(pid: Segment, parsed: Parsed) -> list[dict[str, Any]]:
    idents = []
    for number in (3, 2, 4):  # PID-2 and PID-4 are the older external/alternate ids
        for rep in range(1, repetitions(pid, number) + 1):
            ident = cx_identifier(pid, number, rep, parsed)
            if ident is not None and ident not in idents:
                idents.append(ident)
    ssn = field(pid, 19)
    if ssn and not any(i["system"] == US_SSN for i in idents):
        idents.append({"system": US_SSN, "value": ssn, "type": {"coding": [{"system": V2_0203, "code": "SS"}]}})
    return idents


def patient_id(identifiers: list[dict[str, Any]], context: AdapterContext) -> str:
    """The stable id of the patient: keyed hash of the medical record number (else the first identifier)."""
    chosen = next(
        (i for i in identifiers if (i.get("type") or {}).get("coding", [{}])[0].get("code") == "MR"), None
    ) or next((i for i in identifiers if i["system"] != US_SSN), None)
    if chosen is None:
        raise AdapterError("PID-3 (patient identifier list) is empty", where="PID-3")
    return context.stable_id("Patient", f"{chosen['system']}|{chosen['value']}")


def to_patient(pid: Segment, parsed: Parsed, context: AdapterContext) -> dict[str, Any]:
    identifiers = patient_identifiers(pid, parsed)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id(identifiers, context),
        "identifier": identifiers,
    }
    names = [n for n in (_name(pid, rep) for rep in range(1, repetitions(pid, 5) + 1)) if n]
    if names:
        patient["name"] = names
    born = hl7_date(field(pid, 7)[:8])
    if born:
        patient["birthDate"] = born
    gender = _GENDER.get(field(pid, 8).upper())
    if gender:
        patient["gender"] = gender
    addresses = [a for a in (_address(pid, rep) for rep in range(1, repetitions(pid, 11) + 1)) if a]
    if addresses:
        patient["address"] = addresses
    telecom = _telecoms(pid, 13, "home") + _telecoms(pid, 14, "work")
    if telecom:
        patient["telecom"] = telecom
    marital = field(pid, 16)
    if marital:
        patient["maritalStatus"] = {"coding": [{"system": _MARITAL, "code": marital}]}
    if field(pid, 30).upper() == "Y":
        died = hl7_date(field(pid, 29)[:8])
        patient["deceasedDateTime" if died else "deceasedBoolean"] = died or True
    return patient


def _name(pid: Segment, rep: int) -> dict[str, Any] | None:
    family = field(pid, 5, rep, 1, 1)
    given = [g for g in (field(pid, 5, rep, 2), field(pid, 5, rep, 3)) if g]
    if not family and not given:
        return None
    out: dict[str, Any] = {}
    use = _NAME_USE.get(field(pid, 5, rep, 7).upper())
    if use:
        out["use"] = use
    if family:
        out["family"] = family
    if given:
        out["given"] = given
    for comp, key in ((4, "suffix"), (5, "prefix")):
        value = field(pid, 5, rep, comp)
        if value:
            out[key] = [value]
    return out


def _address(pid: Segment, rep: int) -> dict[str, Any] | None:
    lines = [v for v in (field(pid, 11, rep, 1, 1), field(pid, 11, rep, 2)) if v]
    doc: dict[str, Any] = {
        "line": lines,
        "city": field(pid, 11, rep, 3),
        "state": field(pid, 11, rep, 4),
        "postalCode": field(pid, 11, rep, 5),
        "country": field(pid, 11, rep, 6),
    }
    kind = field(pid, 11, rep, 7).upper()
    if kind in _ADDRESS_USE:
        doc["use"] = _ADDRESS_USE[kind]
    if kind == "M":
        doc["type"] = "postal"
    out = address(doc)
    return out if set(out) - {"use", "type"} else None


def _telecoms(pid: Segment, number: int, default_use: str) -> list[dict[str, Any]]:
    out = []
    for rep in range(1, repetitions(pid, number) + 1):
        equipment = field(pid, number, rep, 3).upper()
        use = _TELECOM_USE.get(field(pid, number, rep, 2).upper(), default_use)
        email = field(pid, number, rep, 4)
        if equipment in ("INTERNET", "X.400") and email:
            out.append({"system": "email", "value": email, "use": use})
            continue
        area, local = field(pid, number, rep, 6), field(pid, number, rep, 7)
        number_text = (area + local) if local else field(pid, number, rep, 1)
        value = phone(number_text)
        if value:
            system = {"FX": "fax", "BP": "pager"}.get(equipment, "phone")
            out.append({"system": system, "value": value, "use": "mobile" if equipment == "CP" else use})
    return out
