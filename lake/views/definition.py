"""Validation and compilation of a SQL on FHIR v2 ViewDefinition.

``compile_view`` checks the whole definition before any resource is read: structure, column
names, constants, every FHIRPath expression (syntax, functions, constants it uses), and that
the branches of each ``unionAll`` produce the same columns in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lake.views.ast import Call, Node, Var, walk
from lake.views.errors import FhirPathSyntaxError, ViewDefinitionError
from lake.views.evaluator import BUILTIN_VARIABLES
from lake.views.functions import check_call
from lake.views.parser import parse
from lake.views.values import Collection, Item, Temporal

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESOURCE = re.compile(r"^[A-Z][A-Za-z]*$")
_TEMPORAL_CONSTANTS = {
    "valueDate": "date",
    "valueDateTime": "dateTime",
    "valueInstant": "dateTime",
    "valueTime": "time",
}
MAX_SELECT_DEPTH = 32
_SELECT_KEYS = frozenset({"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"})


@dataclass(frozen=True, slots=True)
class ColumnDef:
    name: str
    path: str
    expr: Node
    type: str | None
    collection: bool


@dataclass(frozen=True, slots=True)
class SelectDef:
    columns: tuple[ColumnDef, ...]
    selects: tuple[SelectDef, ...]
    union_all: tuple[SelectDef, ...]
    for_each: Node | None = None
    or_null: bool = False
    repeat: tuple[Node, ...] = ()

    def column_names(self) -> list[str]:
        """The names of the columns this select produces, in output order."""
        names = [c.name for c in self.columns]
        for sub in self.selects:
            names.extend(sub.column_names())
        if self.union_all:
            names.extend(self.union_all[0].column_names())
        return names

    def column_defs(self) -> list[ColumnDef]:
        """The column definitions in output order (the first ``unionAll`` branch stands for all)."""
        defs = list(self.columns)
        for sub in self.selects:
            defs.extend(sub.column_defs())
        if self.union_all:
            defs.extend(self.union_all[0].column_defs())
        return defs


@dataclass(frozen=True, slots=True)
class CompiledView:
    resource: str
    root: SelectDef
    where: tuple[Node, ...]
    constants: Mapping[str, Collection]
    columns: tuple[ColumnDef, ...]
    name: str | None


def compile_view(view: Any) -> CompiledView:
    """The compiled form of ``view`` (a ViewDefinition as parsed JSON); raises ViewDefinitionError."""
    if not isinstance(view, dict):
        raise ViewDefinitionError("a ViewDefinition must be a JSON object")
    resource = view.get("resource")
    if not isinstance(resource, str) or not _RESOURCE.match(resource):
        raise ViewDefinitionError("ViewDefinition.resource must name a FHIR resource type")
    constants = _constants(view.get("constant", []))
    selects = view.get("select")
    if not isinstance(selects, list) or not selects:
        raise ViewDefinitionError("ViewDefinition.select must be a non-empty list")
    known = set(constants) | BUILTIN_VARIABLES
    root = SelectDef((), tuple(_select(s, f"select[{i}]", known) for i, s in enumerate(selects)), ())
    where = tuple(_expression(_where_path(w, i), f"where[{i}].path", known) for i, w in enumerate(_list(view, "where")))
    names = root.column_names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ViewDefinitionError(f"column names must be unique; repeated: {', '.join(duplicates)}")
    name = view.get("name") if isinstance(view.get("name"), str) else None
    return CompiledView(resource, root, where, constants, tuple(root.column_defs()), name)


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ViewDefinitionError(f"'{key}' must be a list")
    return value


def _where_path(where: Any, i: int) -> Any:
    if not isinstance(where, dict) or "path" not in where:
        raise ViewDefinitionError(f"where[{i}] must have a path")
    return where["path"]


def _constants(raw: Any) -> dict[str, Collection]:
    if not isinstance(raw, list):
        raise ViewDefinitionError("'constant' must be a list")
    out: dict[str, Collection] = {}
    for i, const in enumerate(raw):
        name = const.get("name") if isinstance(const, dict) else None
        if not isinstance(name, str) or not _NAME.match(name):
            raise ViewDefinitionError(f"constant[{i}] needs a valid name")
        values = [k for k in const if k.startswith("value") and len(k) > 5 and k[5].isupper()]
        if len(values) != 1:
            raise ViewDefinitionError(f"constant '{name}' needs exactly one value[x]")
        out[name] = [_constant_item(values[0], const[values[0]])]
    return out


def _constant_item(key: str, value: Any) -> Item:
    kind = key[5].lower() + key[6:]
    if key in _TEMPORAL_CONSTANTS:
        parsed = Temporal.parse(str(value), _TEMPORAL_CONSTANTS[key])
        if parsed is None:
            raise ViewDefinitionError(f"constant {key} is not a valid {kind}")
        return Item(parsed, _TEMPORAL_CONSTANTS[key])
    if isinstance(value, dict | list) or value is None:
        raise ViewDefinitionError(f"constant {key} must be a primitive value")
    return Item(value, kind)


def _expression(text: Any, where: str, known: set[str]) -> Node:
    if not isinstance(text, str):
        raise ViewDefinitionError(f"{where} must be a FHIRPath string")
    try:
        node = parse(text)
    except FhirPathSyntaxError as exc:
        raise FhirPathSyntaxError(f"{where}: {exc.message}") from None
    for part in walk(node):
        if isinstance(part, Var) and part.name not in known:
            raise FhirPathSyntaxError(f"{where}: undefined constant %{part.name}")
        if isinstance(part, Call):
            try:
                check_call(part.name, part.args)
            except FhirPathSyntaxError as exc:
                raise FhirPathSyntaxError(f"{where}: {exc.message}") from None
    return node


def _select(raw: Any, where: str, known: set[str]) -> SelectDef:
    if not isinstance(raw, dict):
        raise ViewDefinitionError(f"{where} must be an object")
    if where.count("select[") + where.count("unionAll[") > MAX_SELECT_DEPTH:
        raise ViewDefinitionError(f"selects may be nested at most {MAX_SELECT_DEPTH} deep")
    iterators = [k for k in ("forEach", "forEachOrNull", "repeat") if k in raw]
    if len(iterators) > 1:
        raise ViewDefinitionError(f"{where} may have only one of forEach, forEachOrNull, repeat")
    if not _SELECT_KEYS & set(raw):
        raise ViewDefinitionError(f"{where} has no column, select or unionAll")
    for_each: Node | None = None
    if "forEach" in raw or "forEachOrNull" in raw:
        key = iterators[0]
        for_each = _expression(raw[key], f"{where}.{key}", known)
    repeat = tuple(_expression(p, f"{where}.repeat[{i}]", known) for i, p in enumerate(_repeat(raw, where)))
    columns = tuple(_column(c, f"{where}.column[{i}]", known) for i, c in enumerate(_list(raw, "column")))
    selects = tuple(_select(s, f"{where}.select[{i}]", known) for i, s in enumerate(_list(raw, "select")))
    unions = tuple(_select(u, f"{where}.unionAll[{i}]", known) for i, u in enumerate(_list(raw, "unionAll")))
    if unions:
        first = unions[0].column_names()
        if any(u.column_names() != first for u in unions[1:]):
            raise ViewDefinitionError(f"{where}.unionAll branches must have the same columns in the same order")
    return SelectDef(columns, selects, unions, for_each, "forEachOrNull" in raw, repeat)


def _repeat(raw: dict[str, Any], where: str) -> list[Any]:
    paths = raw.get("repeat", [])
    if not isinstance(paths, list) or ("repeat" in raw and not paths):
        raise ViewDefinitionError(f"{where}.repeat must be a non-empty list of paths")
    return paths


def _column(raw: Any, where: str, known: set[str]) -> ColumnDef:
    if not isinstance(raw, dict):
        raise ViewDefinitionError(f"{where} must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ViewDefinitionError(f"{where}.name must be a name of letters, digits and '_'")
    type_ = raw.get("type")
    if type_ is not None and not isinstance(type_, str):
        raise ViewDefinitionError(f"{where}.type must be a FHIR type name")
    collection = raw.get("collection", False)
    if not isinstance(collection, bool):
        raise ViewDefinitionError(f"{where}.collection must be true or false")
    return ColumnDef(
        name, str(raw.get("path")), _expression(raw.get("path"), f"{where}.path", known), type_, collection
    )
