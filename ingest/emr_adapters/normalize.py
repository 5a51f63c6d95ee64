"""Normalization shared by every adapter: code systems, identifier systems, units, dates, phones, addresses.

Each function maps one source spelling to its canonical FHIR form and returns
``None`` (or the input unchanged) when it does not know the value: adapters
decide whether that is a warning or an error. Nothing here logs or raises with
a payload value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
CVX = "http://hl7.org/fhir/sid/cvx"
CPT = "http://www.ama-assn.org/go/cpt"
NDC = "http://hl7.org/fhir/sid/ndc"
UCUM = "http://unitsofmeasure.org"
MVX = "http://terminology.hl7.org/CodeSystem/MVX"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
US_SSN = "http://hl7.org/fhir/sid/us-ssn"
US_NPI = "http://hl7.org/fhir/sid/us-npi"
V2_TABLE = "http://terminology.hl7.org/CodeSystem/v2-{table}"

# Every spelling seen in HL7 v2 coding-system fields (table 0396), OIDs and sloppy URIs.
_CODE_SYSTEMS: dict[str, str] = {
    **dict.fromkeys(("ln", "loinc", "urn:oid:2.16.840.1.113883.6.1", "http://loinc.org/"), LOINC),
    **dict.fromkeys(
        (
            "sct",
            "snm",
            "snm3",
            "snomed",
            "snomedct",
            "snomed-ct",
            "urn:oid:2.16.840.1.113883.6.96",
            "http://snomed.info/sct/",
        ),
        SNOMED,
    ),
    **dict.fromkeys(("rxnorm", "rxn", "urn:oid:2.16.840.1.113883.6.88"), RXNORM),
    **dict.fromkeys(("i10", "i10c", "icd10cm", "icd-10-cm", "urn:oid:2.16.840.1.113883.6.90"), ICD10CM),
    **dict.fromkeys(("i9", "i9c", "icd9cm", "icd-9-cm", "urn:oid:2.16.840.1.113883.6.103"), ICD9CM),
    **dict.fromkeys(("cvx", "urn:oid:2.16.840.1.113883.12.292"), CVX),
    **dict.fromkeys(("cpt", "c4", "cpt4", "cpt-4", "urn:oid:2.16.840.1.113883.6.12"), CPT),
    **dict.fromkeys(("ndc", "urn:oid:2.16.840.1.113883.6.69"), NDC),
    **dict.fromkeys(("ucum", "iso+", "urn:oid:2.16.840.1.113883.6.8"), UCUM),
    **dict.fromkeys(("mvx", "urn:oid:2.16.840.1.113883.12.227"), MVX),
    "ncit": NCIT,
}
_IDENTIFIER_SYSTEMS: dict[str, str] = {
    **dict.fromkeys(("urn:oid:2.16.840.1.113883.4.1", "ussa", "ussSA", "ssa", "usssa", "ss"), US_SSN),
    **dict.fromkeys(("urn:oid:2.16.840.1.113883.4.6", "npi"), US_NPI),
}
_V2_TABLE = re.compile(r"^hl7(\d{4})$", re.IGNORECASE)


def code_system(name: str | None) -> str | None:
    """The canonical URI of a coding system (``LN``, an OID, a URI); None when unknown."""
    if not name:
        return None
    key = name.strip()
    known = _CODE_SYSTEMS.get(key.casefold())
    if known:
        return known
    table = _V2_TABLE.match(key)
    if table:
        return V2_TABLE.format(table=table.group(1))
    if key.startswith(("http://", "https://", "urn:")):
        return key
    return None


def identifier_system(name: str | None) -> str | None:
    """The canonical system of an identifier's assigning authority; None when unknown."""
    if not name:
        return None
    key = name.strip()
    known = _IDENTIFIER_SYSTEMS.get(key.casefold())
    if known:
        return known
    if key.startswith(("http://", "https://", "urn:")):
        return key
    if re.fullmatch(r"\d+(\.\d+)+", key):
        return f"urn:oid:{key}"
    return None


def canonical_codings(node: Any) -> int:
    """Rewrite every ``Coding.system`` / ``Identifier.system`` in ``node`` to its canonical URI.

    Returns how many values changed (the caller may warn about them).
    """
    changed = 0
    if isinstance(node, dict):
        system = node.get("system")
        if isinstance(system, str) and ("code" in node or "value" in node or "_value" in node):
            mapper = code_system if "code" in node else identifier_system
            canonical = mapper(system)
            if canonical and canonical != system:
                node["system"] = canonical
                changed += 1
        for value in node.values():
            changed += canonical_codings(value)
    elif isinstance(node, list):
        for item in node:
            changed += canonical_codings(item)
    return changed


# Unit spellings (case-sensitive first, then folded) -> UCUM code.
_UCUM: dict[str, str] = {
    "%": "%",
    "mg/dl": "mg/dL",
    "g/dl": "g/dL",
    "g/l": "g/L",
    "mmol/l": "mmol/L",
    "umol/l": "umol/L",
    "meq/l": "meq/L",
    "mg/l": "mg/L",
    "ng/ml": "ng/mL",
    "pg/ml": "pg/mL",
    "iu/l": "[IU]/L",
    "u/l": "U/L",
    "beats/min": "/min",
    "bpm": "/min",
    "/min": "/min",
    "breaths/min": "/min",
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "kg": "kg",
    "g": "g",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "oz": "[oz_av]",
    "cm": "cm",
    "m": "m",
    "in": "[in_i]",
    "inch": "[in_i]",
    "kg/m2": "kg/m2",
    "ml": "mL",
    "l": "L",
    "degf": "[degF]",
    "deg f": "[degF]",
    "f": "[degF]",
    "degc": "Cel",
    "deg c": "Cel",
    "cel": "Cel",
    "c": "Cel",
    "10*3/ul": "10*3/uL",
    "k/ul": "10*3/uL",
    "x10e3/ul": "10*3/uL",
    "10*6/ul": "10*6/uL",
    "m/ul": "10*6/uL",
    "g/l-1": "g/L",
    "g.l-1": "g/L",
    "giga.l-1": "10*9/L",
    "10*9/l": "10*9/L",
    "tera.l-1": "10*12/L",
    "10*12/l": "10*12/L",
    "fl": "fL",
    "pg": "pg",
    "s": "s",
    "min": "min",
    "h": "h",
    "d": "d",
    "wk": "wk",
    "mo": "mo",
    "a": "a",
    "yr": "a",
}


def ucum(unit: str | None) -> str | None:
    """The UCUM code of a unit as sources spell it; None when it has no known UCUM form."""
    if not unit:
        return None
    key = unit.strip()
    return _UCUM.get(key) or _UCUM.get(key.casefold())


def quantity(value: float | int, unit: str | None) -> tuple[dict[str, Any], bool]:
    """A FHIR Quantity; the flag says whether the unit was mapped to UCUM."""
    out: dict[str, Any] = {"value": value}
    if unit:
        out["unit"] = unit
    code = ucum(unit)
    if code is not None:
        out["system"] = UCUM
        out["code"] = code
    return out, code is not None or not unit


_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


def hl7_date(value: str | None) -> str | None:
    """An HL7 v2 DT/DTM as a FHIR ``date`` (precision kept: YYYY, YYYY-MM or YYYY-MM-DD)."""
    match = _DTM.match((value or "").strip())
    if not match:
        return None
    year, month, day = match.group(1, 2, 3)
    return "-".join(p for p in (year, month, day) if p)


def hl7_datetime(value: str | None, default_tz: tzinfo = UTC) -> tuple[str | None, bool]:
    """An HL7 v2 DTM as a FHIR ``dateTime``; the flag says the source's own zone was used.

    A time without an offset is read in ``default_tz`` (FHIR requires a zone once
    there is a time); a date alone stays a date.
    """
    match = _DTM.match((value or "").strip())
    if not match:
        return None, False
    year, month, day, hour, minute, second, frac, offset = match.groups()
    if hour is None:
        return hl7_date(value), True
    tz: tzinfo = default_tz
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    try:
        moment = datetime(
            int(year), int(month or 1), int(day or 1), int(hour), int(minute or 0), int(second or 0), tzinfo=tz
        )
    except ValueError:
        return None, False
    text = moment.isoformat()
    if frac:
        text = text[:19] + frac + text[19:]
    return text, offset is not None


def phone(value: str | None) -> str | None:
    """North American numbers as E.164 (``+1NPANXXXXXX``); others as their digits with a leading +."""
    if not value:
        return None
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) == 10:
        return "+1" + digits
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    if len(digits) >= 7:
        return ("+" if value.strip().startswith("+") else "") + digits
    return None


_COUNTRIES = {"usa": "US", "us": "US", "united states": "US", "can": "CA", "ca": "CA", "canada": "CA"}


def address(doc: dict[str, Any]) -> dict[str, Any]:
    """An Address with trimmed parts, upper-case US state, ZIP or ZIP+4, and ISO country codes."""
    out = {k: v for k, v in doc.items() if v not in (None, "", [])}
    for key in ("city", "district", "state", "postalCode", "country", "text"):
        if isinstance(out.get(key), str):
            out[key] = " ".join(out[key].split())
    if isinstance(out.get("line"), list):
        out["line"] = [" ".join(str(line).split()) for line in out["line"] if str(line).strip()]
    state = out.get("state")
    if isinstance(state, str) and len(state) == 2:
        out["state"] = state.upper()
    postal = out.get("postalCode")
    if isinstance(postal, str):
        digits = postal.replace("-", "")
        if digits.isdigit() and len(digits) == 9:
            out["postalCode"] = f"{digits[:5]}-{digits[5:]}"
    country = out.get("country")
    if isinstance(country, str):
        out["country"] = _COUNTRIES.get(country.casefold(), country)
    return {k: v for k, v in out.items() if v not in (None, "", [])}
