"""Search criteria → the ids of the current resources that match them.

Values are turned into blind keys (``ingest/search_index.py``) and looked up in
the journal's token index; ``_lastUpdated`` and quantities use the clear
columns of the index. Repeated parameters are and-ed, comma-separated values
or-ed. Everything here reads the journal's index only: nothing is decrypted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from ingest import conditional
from ingest.errors import InvalidInputError, Issue
from ingest.journal import Journal
from ingest.search_index import (
    Key,
    date_keys,
    parse_day_range,
    reference_query,
    string_query,
    token_query,
)
from ingest.search_params import SearchParam, params_of
from security.pseudonym import Pseudonymizer

PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap")
SUPPORTED_PREFIXES = ("eq", "lt", "le", "gt", "ge")
# Parameters whose values identify a person: never offered to de-identified (masked) callers.
PHI_PARAMS = frozenset(
    {
        "identifier",
        "name",
        "family",
        "given",
        "birthdate",
        "phone",
        "email",
        "address",
        "address-city",
        "address-postalcode",
        "death-date",
    }
)


class UnsupportedParameter(Exception):
    """The parameter (or its modifier / prefix) is not supported: strict → 400, lenient → ignored."""


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str  # the parameter without its modifier
    modifier: str | None
    value: str


def parse_criterion(raw_name: str, value: str) -> Criterion:
    name, _, modifier = raw_name.partition(":")
    return Criterion(name, modifier or None, value)


def _invalid(name: str, why: str) -> InvalidInputError:
    return InvalidInputError("invalid search value", [Issue("invalid", f"{name}: {why}", (name,))])


def split_prefix(value: str) -> tuple[str, str]:
    if value[:2] in PREFIXES and len(value) > 2 and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


class CriteriaMatcher:
    """Answers one criterion at a time with the set of matching live ids."""

    def __init__(self, journal: Journal, pseudo: Pseudonymizer, patient_types: frozenset[str]) -> None:
        self._journal = journal
        self._pseudo = pseudo
        self._patient_types = patient_types

    def supports(self, rtype: str, crit: Criterion) -> bool:
        return self._param(rtype, crit) is not None

    def is_compartment(self, rtype: str, name: str) -> bool:
        """``patient`` / ``subject`` answered through the patient key for ``rtype``."""
        return name in ("patient", "subject") and rtype in self._patient_types

    def param(self, rtype: str, crit: Criterion) -> SearchParam | None:
        """The indexed parameter ``crit`` names (None for the special ones and unknown names)."""
        found = self._param(rtype, crit)
        return None if found is None or found.kind in ("special", "quantity") else found

    def key_sets(self, rtype: str, param: SearchParam, crit: Criterion, value: str) -> list[list[Key]]:
        """Key groups one value needs (all groups, any key of each); raises UnsupportedParameter."""
        return self._key_sets(rtype, param, crit, value)

    def _param(self, rtype: str, crit: Criterion) -> SearchParam | None:
        if crit.name in ("_id", "_lastUpdated", "identifier"):
            return SearchParam(crit.name, "special")
        if crit.name in ("patient", "subject") and rtype in self._patient_types:
            return SearchParam(crit.name, "special")
        return params_of(rtype).get(crit.name)

    def match(self, rtype: str, crit: Criterion) -> set[str]:
        """Ids of live ``rtype`` resources matching ``crit``; raises UnsupportedParameter or InvalidInputError."""
        param = self._param(rtype, crit)
        if param is None:
            raise UnsupportedParameter(crit.name)
        if crit.modifier == "missing":
            return self._missing(rtype, param, crit)
        if param.kind in ("special", "quantity"):
            return self._special(rtype, param, crit)
        found: set[str] = set()
        for value in crit.value.split(","):
            found |= self._any_of_all(rtype, self._key_sets(rtype, param, crit, value))
        return found

    def _key_sets(self, rtype: str, param: SearchParam, crit: Criterion, value: str) -> list[list[Key]]:
        kind, modifier = param.kind, crit.modifier
        if kind == "string":
            if modifier not in (None, "exact"):
                raise UnsupportedParameter(crit.name)
            return (
                [[(f"x:{param.name}", value.strip())]] if modifier == "exact" else [[string_query(param.name, value)]]
            )
        if kind == "token":
            if modifier is not None:
                raise UnsupportedParameter(crit.name)
            return [[token_query(param.name, value)]]
        if kind == "reference":
            if modifier is not None and not modifier[:1].isupper():
                raise UnsupportedParameter(crit.name)
            return [[reference_query(param.name, value, modifier)]]
        if kind == "date":
            if modifier is not None:
                raise UnsupportedParameter(crit.name)
            prefix, text = split_prefix(value)
            if prefix not in SUPPORTED_PREFIXES:
                raise UnsupportedParameter(crit.name)
            span = parse_day_range(text)
            if span is None:
                raise _invalid(crit.name, "not a FHIR date")
            return date_keys(param.name, prefix, *span)
        if kind == "quantity":
            raise UnsupportedParameter(crit.name)  # answered by _special through the clear columns
        raise UnsupportedParameter(crit.name)

    def _any_of_all(self, rtype: str, key_sets: list[list[Key]]) -> set[str]:
        result: set[str] | None = None
        for keys in key_sets:
            found = self._ids(rtype, keys)
            result = found if result is None else result & found
            if not result:
                return set()
        return result or set()

    def _ids(self, rtype: str, keys: Iterable[Key]) -> set[str]:
        tokens = {self._pseudo.token(rtype, name, value) for name, value in keys}
        return set(self._journal.ids_by_token(rtype, tokens)) if tokens else set()

    def _missing(self, rtype: str, param: SearchParam, crit: Criterion) -> set[str]:
        if crit.value not in ("true", "false"):
            raise _invalid(crit.name, ":missing takes true or false")
        if param.kind == "special" and param.name in ("patient", "subject"):
            present = self._sql_ids(
                "SELECT id FROM current WHERE rtype=? AND deleted=0 AND patient_key IS NOT NULL", rtype
            )
        elif param.kind in ("special", "quantity"):
            raise UnsupportedParameter(crit.name)
        else:
            present = self._ids(rtype, [(f"m:{param.name}", "")])
        if crit.value == "false":
            return present
        return self._sql_ids("SELECT id FROM current WHERE rtype=? AND deleted=0", rtype) - present

    def _sql_ids(self, sql: str, *args: object) -> set[str]:
        return {str(r[0]) for r in self._journal.reader().execute(sql, args).fetchall()}

    def _special(self, rtype: str, param: SearchParam, crit: Criterion) -> set[str]:
        name, value = param.name, crit.value
        if crit.modifier is not None and not (name in ("patient", "subject") and crit.modifier == "Patient"):
            raise UnsupportedParameter(crit.name)
        if name == "_id":
            ids = [i for i in value.split(",") if i]
            marks = ",".join("?" * len(ids))
            sql = f"SELECT id FROM current WHERE rtype=? AND deleted=0 AND id IN ({marks})"  # noqa: S608
            return self._sql_ids(sql, rtype, *ids) if ids else set()
        if name == "identifier":
            return set(self._journal.ids_by_token(rtype, conditional.query_tokens(self._pseudo, rtype, value)))
        if name in ("phone", "email"):
            return self._ids(rtype, [(name, v) for v in value.split(",")])
        if name in ("patient", "subject"):
            return self._patients(rtype, value)
        if name == "_lastUpdated":
            return self._last_updated(rtype, value)
        if name == "value-quantity":
            return self._quantity(rtype, value)
        raise UnsupportedParameter(crit.name)

    def _patients(self, rtype: str, value: str) -> set[str]:
        values = [v for v in value.split(",") if v]
        if any(v.count("/") > 1 or ("/" in v and not v.startswith("Patient/")) for v in values):
            return set()
        keys = [self._pseudo.patient_key(v.split("/")[-1]) for v in values]
        marks = ",".join("?" * len(keys))
        sql = f"SELECT id FROM current WHERE patient_key IN ({marks}) AND rtype=? AND deleted=0"  # noqa: S608
        return self._sql_ids(sql, *keys, rtype) if keys else set()

    def _last_updated(self, rtype: str, value: str) -> set[str]:
        found: set[str] = set()
        for item in value.split(","):
            prefix, text = split_prefix(item)
            if prefix not in SUPPORTED_PREFIXES:
                raise UnsupportedParameter("_lastUpdated")
            low, high = instant_range(text)
            cond = {"eq": "last_updated BETWEEN ? AND ?", "ge": "last_updated >= ?", "gt": "last_updated > ?"}
            cond |= {"le": "last_updated <= ?", "lt": "last_updated < ?"}
            args = {"eq": (low, high), "ge": (low,), "gt": (high,), "le": (high,), "lt": (low,)}[prefix]
            sql = f"SELECT id FROM current WHERE rtype=? AND deleted=0 AND {cond[prefix]}"  # noqa: S608
            found |= self._sql_ids(sql, rtype, *args)
        return found

    def _quantity(self, rtype: str, value: str) -> set[str]:
        found: set[str] = set()
        for item in value.split(","):
            prefix, text = split_prefix(item)
            number, _, rest = text.partition("|")
            _system, _, unit = rest.partition("|")
            if prefix not in SUPPORTED_PREFIXES:
                raise UnsupportedParameter("value-quantity")
            try:
                exact = Decimal(number)
            except InvalidOperation:
                raise _invalid("value-quantity", "not a number") from None
            half = Decimal(5) * Decimal(10) ** (exact.as_tuple().exponent - 1)  # type: ignore[operator]
            low, high = float(exact - half), float(exact + half)
            cond = {"eq": "v.value_num >= ? AND v.value_num < ?", "ge": "v.value_num >= ?", "gt": "v.value_num > ?"}
            cond |= {"le": "v.value_num <= ?", "lt": "v.value_num < ?"}
            exact_f = float(exact)
            args: tuple[object, ...] = {
                "eq": (low, high),
                "ge": (exact_f,),
                "gt": (exact_f,),
                "le": (exact_f,),
                "lt": (exact_f,),
            }[prefix]
            unit_sql = " AND v.value_unit = ?" if unit else ""
            sql = (
                "SELECT c.id FROM current c JOIN versions v ON v.rtype=c.rtype AND v.id=c.id AND v.version=c.version "  # noqa: S608
                f"WHERE c.rtype=? AND c.deleted=0 AND {cond[prefix]}{unit_sql}"
            )
            found |= self._sql_ids(sql, rtype, *args, *((unit,) if unit else ()))
        return found


def instant_range(text: str) -> tuple[int, int]:
    """The first and last microsecond a FHIR date or dateTime covers (UTC when no offset is given)."""
    if len(text) > 10:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _invalid("_lastUpdated", "not a FHIR dateTime") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        us = int(moment.timestamp() * 1_000_000)
        step = 1_000_000 if moment.microsecond == 0 else 1
        return us, us + step - 1
    span = parse_day_range(text)
    if span is None:
        raise _invalid("_lastUpdated", "not a FHIR date")
    start = datetime.combine(span[0], time.min, UTC)
    end = datetime.combine(span[1] + timedelta(days=1), time.min, UTC)
    return int(start.timestamp() * 1_000_000), int(end.timestamp() * 1_000_000) - 1
