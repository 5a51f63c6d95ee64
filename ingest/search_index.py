"""Search keys of a resource, and the keys a search value asks for: both sides of the index.

Every searchable value becomes a *key* ``(name, value)`` that the journal stores
only as a blind token (HMAC under the tenant's index key, see
``security/pseudonym.py``): names, addresses, codes, references and dates are
never kept in clear in the index.

* string: the normalized value (case, accents and spaces folded) and every word
  of it, as prefixes of up to ``PREFIX_MAX`` characters (``s:``), plus the exact
  value (``x:``) for ``:exact``;
* token: ``system|code``, ``|code`` (no system), ``*|code`` (any system) and
  ``system|*`` (``t:``);
* reference: ``Type/id`` and ``id`` (``r:``);
* date: the first and the last day the value covers, each as year, month and
  day keys (``d:…:s`` / ``d:…:e``), so that ``eq lt le gt ge`` become sets of
  keys (``date_keys``) — dates are compared to the day;
* presence (``m:``) of every parameter with a value, for ``:missing``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from ingest.search_params import SearchParam, params_of
from security.policy import normalize

PREFIX_MAX = 48
YEAR_MIN, YEAR_MAX = 1800, 2200  # days outside collapse into the keys "<" and ">"
DATE_MIN, DATE_MAX = date(1, 1, 1), date(9999, 12, 31)
Key = tuple[str, str]


def walk(node: Any, path: str) -> Iterator[Any]:
    """Values at a dotted element path; lists are walked at every step."""
    head, _, rest = path.partition(".")
    items = node if isinstance(node, list) else [node]
    for item in items:
        if not isinstance(item, dict) or head not in item:
            continue
        value = item[head]
        if rest:
            yield from walk(value, rest)
        elif isinstance(value, list):
            yield from value
        else:
            yield value


def index_keys(resource: dict[str, Any]) -> tuple[Key, ...]:
    """Every key ``resource`` is findable by, through the parameters of its type."""
    out: list[Key] = []
    for param in params_of(str(resource.get("resourceType"))).values():
        if param.kind in ("special", "quantity"):
            continue
        keys = [key for path in param.paths for value in walk(resource, path) for key in _keys(param, value)]
        if keys:
            out.append((f"m:{param.name}", ""))
            out.extend(keys)
    return tuple(dict.fromkeys(out))


def _keys(param: SearchParam, value: Any) -> Iterator[Key]:
    if param.kind == "string" and isinstance(value, str):
        yield from string_keys(param.name, value)
    elif param.kind == "token":
        for system, code in _codings(value):
            yield from ((f"t:{param.name}", v) for v in _token_values(system, code))
    elif param.kind == "reference" and isinstance(value, dict):
        target = value.get("reference")
        if isinstance(target, str) and "?" not in target:
            parts = target.split("/_history/", 1)[0].split("/")
            if len(parts) >= 2:
                yield (f"r:{param.name}", f"{parts[-2]}/{parts[-1]}")
                yield (f"r:{param.name}", parts[-1])
    elif param.kind == "date":
        span = value_span(value)
        if span is not None:
            yield from ((f"d:{param.name}:s", v) for v in day_keys(span[0]))
            yield from ((f"d:{param.name}:e", v) for v in day_keys(span[1]))


def string_keys(name: str, value: str) -> Iterator[Key]:
    folded = normalize("family", value)
    yield (f"x:{name}", value)
    for part in dict.fromkeys([folded, *folded.split(" ")]):
        for end in range(1, min(len(part), PREFIX_MAX) + 1):
            yield (f"s:{name}", part[:end])


def string_query(name: str, value: str) -> Key:
    """The key a ``name=value`` string search (starts-with, normalized) looks for."""
    return (f"s:{name}", normalize("family", value)[:PREFIX_MAX])


def _codings(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, str):  # a code: its system is implied
        yield None, value
    elif isinstance(value, dict) and "coding" in value:
        for coding in value.get("coding") or ():
            yield from _codings(coding)
    elif isinstance(value, dict) and isinstance(value.get("code"), str):
        system = value.get("system")
        yield (system if isinstance(system, str) else ""), value["code"]


def _token_values(system: str | None, code: str) -> Iterator[str]:
    yield f"*|{code}"
    if system is None:
        return
    yield f"{system}|{code}" if system else f"|{code}"
    if system:
        yield f"{system}|*"


def token_query(name: str, value: str) -> Key:
    """The key of one token search value: ``code``, ``system|code``, ``|code`` or ``system|``."""
    system, sep, code = value.partition("|")
    if not sep:
        return (f"t:{name}", f"*|{value}")
    return (f"t:{name}", f"{system}|{code or '*'}")


def reference_query(name: str, value: str, type_modifier: str | None = None) -> Key:
    parts = [p for p in value.split("/") if p]
    if type_modifier:
        return (f"r:{name}", f"{type_modifier}/{parts[-1] if parts else ''}")
    return (f"r:{name}", "/".join(parts[-2:]) if len(parts) >= 2 else value)


# -- dates ------------------------------------------------------------------------------------


def parse_day_range(text: str) -> tuple[date, date] | None:
    """First and last day a FHIR date / dateTime / instant covers (the date as written)."""
    head = text[:10]
    try:
        if len(head) >= 10 and head[4] == "-" and head[7] == "-":
            day = date(int(head[:4]), int(head[5:7]), int(head[8:10]))
            return day, day
        if len(text) == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:7])
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        if len(text) == 4:
            year = int(text)
            return date(year, 1, 1), date(year, 12, 31)
    except ValueError:
        return None
    return None


def value_span(value: Any) -> tuple[date, date] | None:
    if isinstance(value, str):
        return parse_day_range(value)
    if isinstance(value, dict) and ("start" in value or "end" in value):  # Period: open ends reach out
        start = parse_day_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = parse_day_range(value["end"]) if isinstance(value.get("end"), str) else None
        if start is None and end is None:
            return None
        return (start[0] if start else DATE_MIN), (end[1] if end else DATE_MAX)
    return None


def day_keys(day: date) -> tuple[str, ...]:
    if day.year < YEAR_MIN:
        return ("<",)
    if day.year > YEAR_MAX:
        return (">",)
    return (f"{day.year:04d}", f"{day.year:04d}-{day.month:02d}", day.isoformat())


def cover(low: date, high: date) -> list[str]:
    """The fewest year, month and day keys whose days are exactly ``low..high``."""
    out: list[str] = []
    if low.year < YEAR_MIN:
        out.append("<")
        low = date(YEAR_MIN, 1, 1)
    if high.year > YEAR_MAX:
        out.append(">")
        high = date(YEAR_MAX, 12, 31)
    day = low
    while day <= high:
        year_end = date(day.year, 12, 31)
        month_end = date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])
        if day.month == 1 and day.day == 1 and year_end <= high:
            out.append(f"{day.year:04d}")
            day = year_end + timedelta(days=1)
        elif day.day == 1 and month_end <= high:
            out.append(f"{day.year:04d}-{day.month:02d}")
            day = month_end + timedelta(days=1)
        else:
            out.append(day.isoformat())
            day += timedelta(days=1)
    return out


def date_keys(name: str, prefix: str, low: date, high: date) -> list[list[Key]]:
    """Key sets a date search needs, all of which must match (each set: any of its keys).

    ``low..high`` is the range the search value covers. A stored value covers
    ``start..end``: eq → start ≥ low and end ≤ high; ge → end ≥ low; gt → end > high;
    le → start ≤ high; lt → start < low.
    """
    start, end = f"d:{name}:s", f"d:{name}:e"
    one_day = timedelta(days=1)
    if prefix == "eq":
        return [[(start, k) for k in cover(low, high)], [(end, k) for k in cover(low, high)]]
    if prefix == "ge":
        return [[(end, k) for k in cover(low, DATE_MAX)]]
    if prefix == "gt":
        return [[(end, k) for k in cover(high + one_day, DATE_MAX)]] if high < DATE_MAX else [[]]
    if prefix == "le":
        return [[(start, k) for k in cover(DATE_MIN, high)]]
    if prefix == "lt":
        return [[(start, k) for k in cover(DATE_MIN, low - one_day)]] if low > DATE_MIN else [[]]
    raise ValueError(prefix)
