"""FHIRPath values: items with an optional FHIR type, date/time values, equality and ordering.

FHIR JSON carries no types: a choice element (``valueQuantity``) names its type, everything
else is typed by its JSON form. Comparisons follow FHIRPath: an empty operand gives an empty
result, and date/time values of different precision may be incomparable (empty).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

# Data types that may follow a choice element's name (``value`` + ``Quantity``).
PRIMITIVES = [
    *("base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant"),
    *("integer", "integer64", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt"),
    *("uri", "url", "uuid"),
]
COMPLEX = [
    *("Address", "Age", "Annotation", "Attachment", "CodeableConcept", "CodeableReference", "Coding"),
    *("ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement", "Distance", "Dosage"),
    *("Duration", "Expression", "HumanName", "Identifier", "Meta", "Money", "ParameterDefinition", "Period"),
    *("Quantity", "Range", "Ratio", "RatioRange", "Reference", "RelatedArtifact", "SampledData", "Signature"),
    *("Timing", "TriggerDefinition", "UsageContext"),
]
CHOICE_SUFFIXES = {p[0].upper() + p[1:]: p for p in PRIMITIVES} | {c: c for c in COMPLEX}
_PARENT = {
    "code": "string",
    "id": "string",
    "markdown": "string",
    "url": "uri",
    "canonical": "uri",
    "oid": "uri",
    "uuid": "uri",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "Age": "Quantity",
    "Count": "Quantity",
    "Distance": "Quantity",
    "Duration": "Quantity",
    "SimpleQuantity": "Quantity",
    "MoneyQuantity": "Quantity",
}
STRINGISH = frozenset({"string", "code", "id", "markdown", "uri", "url", "canonical", "oid", "uuid", "base64Binary"})
TEMPORAL_KINDS = frozenset({"date", "dateTime", "instant", "time"})


class Item:
    """One value of a FHIRPath collection; ``type`` is known for literals and choice elements."""

    __slots__ = ("type", "value")

    def __init__(self, value: Any, type_: str | None = None) -> None:
        self.value = value
        self.type = type_

    def __repr__(self) -> str:  # values may be PHI: show the type only
        return f"Item(<{self.type or type(self.value).__name__}>)"


Collection = list[Item]


def normalize_type(name: str) -> str:
    """``FHIR.string`` -> ``string``, ``System.String`` -> ``string``, ``System.DateTime`` -> ``dateTime``."""
    if name.startswith("FHIR."):
        return name[5:]
    if name.startswith("System."):
        base = name[7:]
        return base[0].lower() + base[1:]
    return name


def type_matches(item: Item, wanted: str) -> bool:
    """Whether ``item`` is of type ``wanted`` or one of its specializations (``ofType``/``is``)."""
    wanted = normalize_type(wanted)
    if item.type is not None:
        name: str | None = item.type
        while name is not None:
            if name == wanted:
                return True
            name = _PARENT.get(name)
        return False
    value = item.value
    if isinstance(value, bool):
        return wanted == "boolean"
    if isinstance(value, int):
        return wanted == "integer"
    if isinstance(value, float | Decimal):
        return wanted == "decimal"
    if isinstance(value, str):
        if wanted in TEMPORAL_KINDS:
            return Temporal.parse(value, "dateTime" if wanted == "instant" else wanted) is not None
        return wanted in STRINGISH
    if isinstance(value, dict):
        return value.get("resourceType") == wanted or (
            "resourceType" in value and wanted in ("Resource", "DomainResource")
        )
    return False


_DATE = r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
_TIME = r"(\d{2})(?::(\d{2})(?::(\d{2}(?:\.\d+)?))?)?"
_TZ = r"(Z|[+-]\d{2}:\d{2})?"
_PATTERNS = {
    "date": re.compile(_DATE + "$"),
    "dateTime": re.compile(_DATE + r"(?:T" + _TIME + ")?" + _TZ + "$"),
    "time": re.compile(_TIME + "$"),
}


@dataclass(frozen=True, slots=True)
class Temporal:
    """A FHIRPath Date, DateTime or Time with its precision (number of components given)."""

    kind: str
    text: str
    parts: tuple[Decimal, ...]
    tz: str | None

    @staticmethod
    def parse(text: str, kind: str) -> Temporal | None:
        """``text`` as a value of ``kind`` (date, dateTime or time), or None if it is not one."""
        kind = "dateTime" if kind == "instant" else kind
        pattern = _PATTERNS.get(kind)
        match = pattern.match(text) if pattern else None
        if match is None:
            return None
        groups = match.groups()
        tz = groups[-1] if kind == "dateTime" else None
        comps = groups[:-1] if kind == "dateTime" else groups
        parts = tuple(Decimal(g) for g in comps if g is not None)
        if not _in_range(parts if kind != "time" else (Decimal(2000), Decimal(1), Decimal(1), *parts)):
            return None
        return Temporal(kind, text, parts, tz)

    def comparable_parts(self, other: Temporal) -> tuple[tuple[Decimal, ...], tuple[Decimal, ...]]:
        """Both values' components, moved to UTC when both carry a time and a zone."""
        if self.tz and other.tz and len(self.parts) > 3 and len(other.parts) > 3:
            return _in_utc(self), _in_utc(other)
        return self.parts, other.parts


def _in_range(parts: tuple[Decimal, ...]) -> bool:
    """Whether year, month, day, hour, minute, second (as many as given) name a real moment."""
    limits = (9999, 12, 31, 23, 59)
    if any(p > limit for p, limit in zip(parts, limits, strict=False)) or (len(parts) > 5 and parts[5] >= 60):
        return False
    if len(parts) > 1 and parts[1] < 1:
        return False
    if len(parts) > 2:
        last = calendar.monthrange(int(parts[0]), int(parts[1]))[1] if parts[0] >= 1 else 31
        return 1 <= parts[2] <= last
    return True


def _in_utc(value: Temporal) -> tuple[Decimal, ...]:
    p = [int(x) for x in value.parts[:5]] + [0] * (5 - min(5, len(value.parts)))
    offset = timedelta(0)
    if value.tz and value.tz != "Z":
        sign = -1 if value.tz[0] == "-" else 1
        offset = sign * timedelta(hours=int(value.tz[1:3]), minutes=int(value.tz[4:6]))
    moment = datetime(p[0], p[1], p[2], p[3], p[4], tzinfo=timezone(offset)).astimezone(UTC)
    out = (moment.year, moment.month, moment.day, moment.hour, moment.minute)
    return tuple(Decimal(x) for x in out[: len(value.parts)]) + value.parts[5:]


def as_temporal(item: Item, kind: str) -> Temporal | None:
    """``item`` as a date/time of ``kind`` when it is one or is a string that parses as one."""
    if isinstance(item.value, Temporal):
        return item.value
    if isinstance(item.value, str):
        return Temporal.parse(item.value, item.type if item.type in TEMPORAL_KINDS else kind)
    return None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def compare(a: Item, b: Item) -> int | None:
    """-1, 0 or 1 ordering ``a`` and ``b``; None when they are incomparable."""
    x, y = _number(a.value), _number(b.value)
    if x is not None and y is not None:
        return (x > y) - (x < y)
    ta, tb = _temporals(a, b)
    if ta is not None and tb is not None:
        pa_, pb_ = ta.comparable_parts(tb)
        for u, v in zip(pa_, pb_, strict=False):
            if u != v:
                return -1 if u < v else 1
        return 0 if len(pa_) == len(pb_) else None
    if isinstance(a.value, str) and isinstance(b.value, str):
        return (a.value > b.value) - (a.value < b.value)
    return None


def _temporals(a: Item, b: Item) -> tuple[Temporal | None, Temporal | None]:
    if isinstance(a.value, Temporal):
        return a.value, as_temporal(b, a.value.kind)
    if isinstance(b.value, Temporal):
        return as_temporal(a, b.value.kind), b.value
    kind_a = a.type if a.type in TEMPORAL_KINDS else None
    kind_b = b.type if b.type in TEMPORAL_KINDS else None
    kind = kind_a or kind_b
    if kind is None:
        return None, None
    return as_temporal(a, kind), as_temporal(b, kind)


def equal(a: Item, b: Item) -> bool | None:
    """FHIRPath ``=`` on two items; None when the answer is unknown (date precision)."""
    if isinstance(a.value, bool) or isinstance(b.value, bool):
        return isinstance(a.value, bool) and isinstance(b.value, bool) and a.value == b.value
    if isinstance(a.value, dict) or isinstance(b.value, dict):
        return bool(a.value == b.value)
    texts = isinstance(a.value, str) and isinstance(b.value, str)
    if texts and a.type not in TEMPORAL_KINDS and b.type not in TEMPORAL_KINDS:
        return bool(a.value == b.value)
    order = compare(a, b)
    if order is None:
        ta, tb = _temporals(a, b)
        return None if ta is not None and tb is not None else False
    return order == 0


def equivalent(a: Item, b: Item) -> bool:
    """FHIRPath ``~``: case- and whitespace-insensitive for strings, never unknown."""
    if isinstance(a.value, str) and isinstance(b.value, str):
        return " ".join(a.value.lower().split()) == " ".join(b.value.lower().split())
    return bool(equal(a, b))


def plain(item: Item) -> Any:
    """The Python value of ``item`` for output: date/times as their text, decimals as float."""
    value = item.value
    if isinstance(value, Temporal):
        return value.text
    if isinstance(value, Decimal):
        return int(value) if item.type == "integer" else float(value)
    return value
