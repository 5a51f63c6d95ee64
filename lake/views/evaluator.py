"""Evaluation of FHIRPath syntax trees over FHIR JSON resources.

``evaluate(node, focus, ctx)`` returns a collection (a list of Items). Navigation flattens
arrays, resolves choice elements (``value`` finds ``valueQuantity``) and skips nulls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from lake.views.ast import Binary, Call, Ident, Index, Literal, Member, Node, Special, TypeOp, Unary, Var
from lake.views.errors import ViewEvaluationError
from lake.views.values import CHOICE_SUFFIXES, Collection, Item, Temporal, compare, equal, equivalent, type_matches

ROOT_VARIABLES = frozenset({"resource", "rootResource", "context"})
BUILTIN_VARIABLES = ROOT_VARIABLES | {"rowIndex"}


@dataclass(frozen=True, slots=True)
class Context:
    """What an expression sees besides its focus: the resource, constants, row and loop indexes."""

    root: Item
    constants: Mapping[str, Collection] = field(default_factory=dict)
    row_index: int = 0
    this: Collection = field(default_factory=list)
    index: int | None = None

    def within(self, this: Collection, index: int | None = None) -> Context:
        return replace(self, this=this, index=index)


def evaluate(node: Node, focus: Collection, ctx: Context) -> Collection:
    """The collection ``node`` yields on ``focus``; raises ViewEvaluationError."""
    handler = _HANDLERS[type(node)]
    result: Collection = handler(node, focus, ctx)
    return result


def children_named(item: Item, name: str) -> Collection:
    """The values of element ``name`` of ``item`` (a choice element's typed alternatives included)."""
    obj = item.value
    if not isinstance(obj, dict):
        return []
    if name in obj:
        return _flatten(obj[name], None)
    size = len(name)
    for key, value in obj.items():
        if len(key) > size and key.startswith(name) and key[size].isupper():
            type_ = CHOICE_SUFFIXES.get(key[size:])
            if type_ is not None:
                return _flatten(value, type_)
    return []


def _flatten(value: Any, type_: str | None) -> Collection:
    if value is None:
        return []
    if isinstance(value, list):
        return [Item(v, type_) for v in value if v is not None]
    return [Item(value, type_)]


def _literal(node: Literal, focus: Collection, ctx: Context) -> Collection:
    if node.value is None:
        return []
    if node.type in ("date", "dateTime", "time"):
        return [Item(Temporal.parse(node.value, node.type), node.type)]
    return [Item(node.value, node.type)]


def _ident(node: Ident, focus: Collection, ctx: Context) -> Collection:
    out: Collection = []
    for item in focus:
        if node.name[:1].isupper() and isinstance(item.value, dict) and item.value.get("resourceType") == node.name:
            out.append(item)
        else:
            out.extend(children_named(item, node.name))
    return out


def _member(node: Member, focus: Collection, ctx: Context) -> Collection:
    out: Collection = []
    for item in evaluate(node.target, focus, ctx):
        out.extend(children_named(item, node.name))
    return out


def _call(node: Call, focus: Collection, ctx: Context) -> Collection:
    from lake.views.functions import FUNCTIONS

    source = focus if node.target is None else evaluate(node.target, focus, ctx)
    return FUNCTIONS[node.name].run(source, node.args, ctx)


def _index(node: Index, focus: Collection, ctx: Context) -> Collection:
    items = evaluate(node.target, focus, ctx)
    at = evaluate(node.index, ctx.this, ctx)
    if len(at) != 1 or isinstance(at[0].value, bool) or not isinstance(at[0].value, int):
        raise ViewEvaluationError("an indexer must be a single integer")
    position = at[0].value
    return [items[position]] if 0 <= position < len(items) else []


def _var(node: Var, focus: Collection, ctx: Context) -> Collection:
    if node.name == "rowIndex":
        return [Item(ctx.row_index, "integer")]
    if node.name in ROOT_VARIABLES:
        return [ctx.root]
    if node.name not in ctx.constants:
        raise ViewEvaluationError(f"undefined constant %{node.name}")
    return list(ctx.constants[node.name])


def _special(node: Special, focus: Collection, ctx: Context) -> Collection:
    if node.name == "$this":
        return focus
    if node.name == "$index" and ctx.index is not None:
        return [Item(ctx.index, "integer")]
    return []


def truth(items: Collection, what: str = "a boolean operand") -> bool | None:
    """FHIRPath singleton evaluation to boolean: empty is None, one non-boolean item is true."""
    if not items:
        return None
    if len(items) > 1:
        raise ViewEvaluationError(f"{what} returned more than one value")
    value = items[0].value
    return value if isinstance(value, bool) else True


def _boolean(value: bool | None) -> Collection:
    return [] if value is None else [Item(value, "boolean")]


def _logic(op: str, left: bool | None, right: bool | None) -> bool | None:
    if op == "and":
        if left is False or right is False:
            return False
        return None if left is None or right is None else True
    if op == "or":
        if left is True or right is True:
            return True
        return None if left is None or right is None else False
    if left is None or right is None:
        return True if op == "implies" and (left is False or right is True) else None
    return left != right if op == "xor" else (not left) or right


def _equality(op: str, left: Collection, right: Collection) -> Collection:
    if op in ("~", "!~"):
        same = len(left) == len(right) and all(equivalent(a, b) for a, b in zip(left, right, strict=True))
        return _boolean(same if op == "~" else not same)
    if not left or not right:
        return []
    result: bool | None = len(left) == len(right)
    if result:
        for a, b in zip(left, right, strict=True):
            one = equal(a, b)
            if one is not True:
                result = one
                break
    return _boolean(result if op == "=" or result is None else not result)


def _ordering(op: str, left: Collection, right: Collection) -> Collection:
    if not left or not right:
        return []
    if len(left) > 1 or len(right) > 1:
        raise ViewEvaluationError(f"operator '{op}' needs single values")
    order = compare(left[0], right[0])
    if order is None:
        return []
    return _boolean({"<": order < 0, ">": order > 0, "<=": order <= 0, ">=": order >= 0}[op])


def _number(items: Collection, op: str) -> Any:
    if len(items) > 1:
        raise ViewEvaluationError(f"operator '{op}' needs single values")
    value = items[0].value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise ViewEvaluationError(f"operator '{op}' needs numbers or strings")
    return Decimal(str(value)) if isinstance(value, float) else value


def _arithmetic(op: str, left: Collection, right: Collection) -> Collection:
    if op == "&":
        text = "".join(str(x.value) for x in left[:1]) + "".join(str(x.value) for x in right[:1])
        return [Item(text, "string")]
    if not left or not right:
        return []
    a, b = _number(left, op), _number(right, op)
    if isinstance(a, str) or isinstance(b, str):
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return [Item(a + b, "string")]
        raise ViewEvaluationError(f"operator '{op}' cannot combine these operands")
    try:
        value = _apply(op, a, b)
    except (ZeroDivisionError, InvalidOperation):
        return []
    if value is None:
        return []
    return [Item(value, "integer" if isinstance(value, int) else "decimal")]


def _apply(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return None if b == 0 else Decimal(a) / Decimal(b)
    if op == "div":
        return None if b == 0 else int(Decimal(a) // Decimal(b))
    return None if b == 0 else a % b  # mod


def _binary(node: Binary, focus: Collection, ctx: Context) -> Collection:
    left = evaluate(node.left, focus, ctx)
    right = evaluate(node.right, focus, ctx)
    op = node.op
    if op in ("and", "or", "xor", "implies"):
        return _boolean(_logic(op, truth(left), truth(right)))
    if op in ("=", "!=", "~", "!~"):
        return _equality(op, left, right)
    if op in ("<", ">", "<=", ">="):
        return _ordering(op, left, right)
    if op == "|":
        out = list(left)
        for item in right:
            if not any(equal(item, seen) for seen in out):
                out.append(item)
        return out
    if op in ("in", "contains"):
        needle, haystack = (left, right) if op == "in" else (right, left)
        if not needle:
            return []
        return _boolean(any(equal(needle[0], x) for x in haystack))
    return _arithmetic(op, left, right)


def _unary(node: Unary, focus: Collection, ctx: Context) -> Collection:
    items = evaluate(node.operand, focus, ctx)
    if node.op == "+" or not items:
        return items
    value = _number(items, "-")
    if isinstance(value, str):
        raise ViewEvaluationError("unary '-' needs a number")
    return [Item(-value, items[0].type)]


def _type_op(node: TypeOp, focus: Collection, ctx: Context) -> Collection:
    items = evaluate(node.operand, focus, ctx)
    if node.op == "as":
        return [i for i in items if type_matches(i, node.type_name)]
    if len(items) > 1:
        raise ViewEvaluationError("'is' needs a single value")
    return _boolean(type_matches(items[0], node.type_name)) if items else []


_HANDLERS: dict[type, Any] = {
    Literal: _literal,
    Ident: _ident,
    Member: _member,
    Call: _call,
    Index: _index,
    Var: _var,
    Special: _special,
    Binary: _binary,
    Unary: _unary,
    TypeOp: _type_op,
}
