"""De-identification at decrypt time, for roles that may see data but not identities (researchers).

Driven by the field policy: every PHI element of the type is removed, except
dates, which are cut to the year (Safe Harbor keeps years). The result
carries the ``REDACTED`` security label so no consumer mistakes it for the record.
"""

from __future__ import annotations

import re
from typing import Any

from security.policy import field_policy

_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2}([T ].*)?)?)?$")
REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}


def _year_only(value: Any) -> Any:
    """A date, dateTime or Period cut to the year; None when the element is not a date."""
    if isinstance(value, str) and _DATE.match(value):
        return value[:4]
    if isinstance(value, dict) and set(value) <= {"start", "end"} and value:
        cut = {k: _year_only(v) for k, v in value.items()}
        return cut if all(v is not None for v in cut.values()) else None
    return None


def deidentify(resource: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``resource`` without identifiers and with dates reduced to the year."""
    spec = field_policy().of(str(resource.get("resourceType")))
    out = dict(resource)
    for name in spec.body:
        out.pop(name, None)
    for name in spec.fields:
        if name in out:
            year = _year_only(out[name])
            if year is None:
                del out[name]
            else:
                out[name] = year
    meta = dict(out.get("meta") or {})
    meta["security"] = [*meta.get("security", []), REDACTED]
    out["meta"] = meta
    return out
