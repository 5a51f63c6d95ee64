"""``lowBoundary()`` / ``highBoundary()``: the least and greatest values a value of limited precision may stand for."""

from __future__ import annotations

import calendar
from decimal import Decimal

from lake.views.values import Item, Temporal

_EARLIEST_TZ, _LATEST_TZ = "+14:00", "-12:00"


def boundary(item: Item, low: bool, precision: int | None = None) -> Item | None:
    """The low (or high) boundary of a decimal, date, dateTime or time ``item``; None for other values."""
    value = item.value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return Item(_decimal(value, low, precision), "decimal")
    temporal = value if isinstance(value, Temporal) else _temporal_of(item)
    if temporal is None:
        return None
    if temporal.kind == "date":
        return Item(Temporal.parse(_date(temporal, low), "date"), "date")
    if temporal.kind == "time":
        return Item(Temporal.parse(_time(temporal.parts, low), "time"), "time")
    zone = temporal.tz or (_EARLIEST_TZ if low else _LATEST_TZ)
    text = f"{_date(temporal, low)}T{_time(temporal.parts[3:], low)}{zone}"
    return Item(Temporal.parse(text, "dateTime"), "dateTime")


def _temporal_of(item: Item) -> Temporal | None:
    if not isinstance(item.value, str):
        return None
    kinds = [item.type] if item.type in ("date", "dateTime", "instant", "time") else ["date", "dateTime", "time"]
    for kind in kinds:
        found = Temporal.parse(item.value, kind or "date")
        if found is not None:
            return found
    return None


def _decimal(value: int | float | Decimal, low: bool, precision: int | None) -> Decimal:
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    exponent = number.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    half = Decimal(5).scaleb(-(places + 1))
    result = number - half if low else number + half
    if precision is not None:
        result = result.quantize(Decimal(1).scaleb(-precision))
    return result


def _date(value: Temporal, low: bool) -> str:
    year = int(value.parts[0])
    month = int(value.parts[1]) if len(value.parts) > 1 else (1 if low else 12)
    last = calendar.monthrange(year, month)[1]
    day = int(value.parts[2]) if len(value.parts) > 2 else (1 if low else last)
    return f"{year:04d}-{month:02d}-{day:02d}"


def _time(parts: tuple[Decimal, ...], low: bool) -> str:
    hour = int(parts[0]) if parts else (0 if low else 23)
    minute = int(parts[1]) if len(parts) > 1 else (0 if low else 59)
    if len(parts) > 2:
        seconds = parts[2]
        whole = int(seconds)
        fraction = seconds - whole
        millis = int(fraction * 1000) if fraction else (0 if low else 999)
    else:
        whole, millis = (0, 0) if low else (59, 999)
    return f"{hour:02d}:{minute:02d}:{whole:02d}.{millis:03d}"
