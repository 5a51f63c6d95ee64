"""Search criteria evaluated on one resource in memory (as-of searches over bodies of an older snapshot).

The current-state index only knows current versions, so a search ``_asOf`` an
earlier instant narrows candidates by patient or id and then checks every
other criterion here, against the keys the same extraction would have indexed
(``ingest/search_index.py``): the semantics are those of a live search.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from ingest.extract import identifiers, search_values
from ingest.search import CriteriaMatcher, Criterion, UnsupportedParameter, instant_range, split_prefix
from ingest.search_index import index_keys
from security.policy import normalize
from security.pseudonym import Pseudonymizer


def matches(
    matcher: CriteriaMatcher,
    pseudo: Pseudonymizer,
    doc: dict[str, Any],
    last_updated_us: int,
    patient_key: str | None,
    crit: Criterion,
) -> bool:
    """Whether ``doc`` meets ``crit``; raises UnsupportedParameter, InvalidInputError."""
    rtype = str(doc.get("resourceType"))
    keys = set(index_keys(doc))
    values = [v for v in crit.value.split(",") if v]
    if crit.name == "_id":
        return doc.get("id") in values
    if matcher.is_compartment(rtype, crit.name):
        wanted = {pseudo.patient_key(v.split("/")[-1]) for v in values}
        return patient_key in wanted
    if crit.name == "_lastUpdated":
        return any(_instant_matches(last_updated_us, v) for v in values)
    if crit.name == "identifier":
        return any(_identifier_matches(identifiers(doc), v) for v in values)
    if crit.name in ("phone", "email"):
        held = {normalize(p, v) for p, v in search_values(doc) if p == crit.name}
        return any(normalize(crit.name, v) in held for v in values)
    if crit.name == "value-quantity":
        return any(_quantity_matches(doc.get("valueQuantity"), v) for v in values)
    param = matcher.param(rtype, crit)
    if param is None:
        raise UnsupportedParameter(crit.name)
    if crit.modifier == "missing":
        present = (f"m:{param.name}", "") in keys
        return present == (crit.value == "false")
    return any(all(keys & set(group) for group in matcher.key_sets(rtype, param, crit, v)) for v in values)


def _instant_matches(stamp: int, item: str) -> bool:
    prefix, text = split_prefix(item)
    low, high = instant_range(text)
    tests = {"eq": low <= stamp <= high, "ge": stamp >= low, "gt": stamp > high, "le": stamp <= high, "lt": stamp < low}
    if prefix not in tests:
        raise UnsupportedParameter("_lastUpdated")
    return tests[prefix]


def _identifier_matches(held: tuple[tuple[str, str], ...], item: str) -> bool:
    system, sep, value = item.partition("|")
    if not sep:
        return any(v == item for _, v in held)
    return any(v == value and s == system for s, v in held)


def _quantity_matches(quantity: Any, item: str) -> bool:
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), int | float):
        return False
    prefix, text = split_prefix(item)
    number, _, rest = text.partition("|")
    unit = rest.partition("|")[2]
    try:
        exact = Decimal(number)
    except InvalidOperation:
        return False
    if unit and (quantity.get("unit") or quantity.get("code")) != unit:
        return False
    value = Decimal(str(quantity["value"]))
    half = Decimal(5) * Decimal(10) ** (exact.as_tuple().exponent - 1)  # type: ignore[operator]
    tests = {
        "eq": exact - half <= value < exact + half,
        "ge": value >= exact,
        "gt": value > exact,
        "le": value <= exact,
        "lt": value < exact,
    }
    if prefix not in tests:
        raise UnsupportedParameter("value-quantity")
    return bool(tests[prefix])
