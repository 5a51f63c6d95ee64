"""Which resource elements a view's columns and filters reach, to keep PHI out of research views.

The analysis is static and conservative: a column reaches every top-level element any part of
its expression (or of an enclosing ``forEach`` / ``repeat``) navigates, including inside
``where(...)`` criteria; a column that can output the whole resource (``$this`` at the top,
``%resource``) reaches everything. The caller passes the PHI element names (the field policy
of the security package) and refuses, drops or masks the columns reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lake.views.ast import Binary, Call, Ident, Index, Literal, Member, Node, Special, TypeOp, Unary, Var, type_name_of
from lake.views.definition import CompiledView, SelectDef
from lake.views.evaluator import ROOT_VARIABLES
from lake.views.functions import FUNCTIONS
from lake.views.values import CHOICE_SUFFIXES, normalize_type

Chain = tuple[str, ...]
_SAME_FOCUS = frozenset({"where", "first", "last", "tail", "skip", "take", "single", "distinct", "ofType", "as"})
_DERIVED_TEXT = frozenset({"join", "toString", "upper", "lower", "trim", "substring"})


@dataclass(frozen=True, slots=True)
class ColumnReach:
    name: str
    elements: frozenset[str]  # top-level elements of the resource the column reads
    whole_resource: bool  # the column may output the resource itself


def _reach(node: Node, ctx: frozenset[Chain], touched: set[Chain]) -> frozenset[Chain]:
    if isinstance(node, Literal):
        return frozenset()
    if isinstance(node, Ident):
        out = {(*c, node.name) for c in ctx}
        if node.name[:1].isupper() and () in ctx:
            out.add(())
        touched.update(out)
        return frozenset(out)
    if isinstance(node, Member):
        out = {(*c, node.name) for c in _reach(node.target, ctx, touched)}
        touched.update(out)
        return frozenset(out)
    if isinstance(node, Special):
        return ctx if node.name == "$this" else frozenset()
    if isinstance(node, Var):
        return frozenset({()}) if node.name in ROOT_VARIABLES else frozenset()
    if isinstance(node, Index):
        _reach(node.index, ctx, touched)
        return _reach(node.target, ctx, touched)
    if isinstance(node, Binary):
        return _reach(node.left, ctx, touched) | _reach(node.right, ctx, touched)
    if isinstance(node, Unary | TypeOp):
        return _reach(node.operand, ctx, touched)
    return _reach_call(node, ctx, touched)


def _narrowed(node: Call, ctx: frozenset[Chain], touched: set[Chain]) -> frozenset[Chain] | None:
    """``value.ofType(Quantity)`` reaches ``valueQuantity`` only, not every ``value[x]``."""
    wanted = type_name_of(node.args[0]) if node.args else None
    target = node.target
    if node.name not in ("ofType", "as") or wanted is None or not isinstance(target, Ident | Member):
        return None
    parent = ctx if isinstance(target, Ident) else _reach(target.target, ctx, touched)
    kind = normalize_type(wanted)
    out = {(*c, target.name + kind[:1].upper() + kind[1:]) for c in parent}
    touched.update(out)
    return frozenset(out)


def _reach_call(node: Call, ctx: frozenset[Chain], touched: set[Chain]) -> frozenset[Chain]:
    narrowed = _narrowed(node, ctx, touched)
    if narrowed is not None:
        return narrowed
    base = ctx if node.target is None else _reach(node.target, ctx, touched)
    touched.update(base)
    outs: list[frozenset[Chain]] = []
    if not FUNCTIONS[node.name].type_args:
        outs = [_reach(arg, base, touched) for arg in node.args]
    if node.name in _SAME_FOCUS or node.name in _DERIVED_TEXT:
        return base
    if node.name == "select":
        return outs[0]
    if node.name == "iif":
        return frozenset().union(*outs[1:])
    if node.name == "extension":
        out = {(*c, "extension") for c in base}
        touched.update(out)
        return frozenset(out)
    return frozenset()


def _walk(select: SelectDef, ctx: frozenset[Chain], touched: set[Chain], found: list[ColumnReach]) -> None:
    if select.for_each is not None:
        ctx = _reach(select.for_each, ctx, touched)
    if select.repeat:
        ctx = frozenset().union(*(_reach(p, ctx, touched) for p in select.repeat))
    for column in select.columns:
        mine = set(touched)
        outputs = _reach(column.expr, ctx, mine)
        elements = frozenset(c[0] for c in mine if c)
        found.append(ColumnReach(column.name, elements, () in outputs))
    for sub in (*select.selects, *select.union_all):
        _walk(sub, ctx, set(touched), found)


def column_reach(view: CompiledView) -> list[ColumnReach]:
    """Every column definition of ``view`` with the elements it reaches (``unionAll`` branches each listed)."""
    found: list[ColumnReach] = []
    _walk(view.root, frozenset({()}), set(), found)
    return found


def filter_elements(view: CompiledView) -> frozenset[str]:
    """The top-level elements the view's ``where`` filters read (they decide which rows exist)."""
    touched: set[Chain] = set()
    for condition in view.where:
        _reach(condition, frozenset({()}), touched)
    return frozenset(c[0] for c in touched if c)


def touches(element: str, phi: str) -> bool:
    """Whether reading ``element`` reads the PHI element ``phi`` (``deceased`` reaches ``deceasedDateTime``)."""
    return phi == element or (phi.startswith(element) and phi[len(element) :] in CHOICE_SUFFIXES)


def phi_columns(view: CompiledView, phi_elements: Iterable[str]) -> list[str]:
    """Names of the output columns that reach any of ``phi_elements`` (or the whole resource)."""
    phi = tuple(phi_elements)
    flagged: list[str] = []
    for reach in column_reach(view):
        hit = reach.whole_resource or any(touches(e, p) for e in reach.elements for p in phi)
        if hit and reach.name not in flagged:
            flagged.append(reach.name)
    return flagged
