"""The FHIRPath functions a view may call, with their arity (checked when the view is compiled)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from lake.views.ast import Node, type_name_of
from lake.views.boundary import boundary
from lake.views.errors import FhirPathSyntaxError, ViewEvaluationError
from lake.views.evaluator import Context, _boolean, evaluate, truth
from lake.views.values import Collection, Item, equal, plain, type_matches

Runner = Callable[[Collection, tuple[Node, ...], Context], Collection]


@dataclass(frozen=True, slots=True)
class Function:
    run: Runner
    min_args: int = 0
    max_args: int = 0
    type_args: bool = False  # arguments are type specifiers, not expressions


def _arg(args: tuple[Node, ...], n: int, ctx: Context) -> Collection:
    return evaluate(args[n], ctx.this, ctx) if len(args) > n else []


def _string_arg(args: tuple[Node, ...], n: int, ctx: Context, default: str | None = None) -> str | None:
    items = _arg(args, n, ctx)
    if not items:
        return default
    return str(plain(items[0]))


def _int_arg(args: tuple[Node, ...], n: int, ctx: Context) -> int:
    items = _arg(args, n, ctx)
    if len(items) != 1 or isinstance(items[0].value, bool) or not isinstance(items[0].value, int):
        raise ViewEvaluationError("a function argument must be a single integer")
    return items[0].value


def _type_arg(args: tuple[Node, ...], n: int) -> str:
    name = type_name_of(args[n])
    if name is None:
        raise ViewEvaluationError("expected a type name as function argument")
    return name


def _per_item(source: Collection, criteria: Node, ctx: Context) -> list[tuple[Item, Collection]]:
    return [(item, evaluate(criteria, [item], ctx.within([item], i))) for i, item in enumerate(source)]


def _where(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    return [item for item, result in _per_item(source, args[0], ctx) if truth(result, "where()") is True]


def _select(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    return [x for _, result in _per_item(source, args[0], ctx) for x in result]


def _exists(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    return _boolean(bool(_where(source, args, ctx) if args else source))


def _all(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    return _boolean(all(truth(result, "all()") is True for _, result in _per_item(source, args[0], ctx)))


def _single(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    if len(source) > 1:
        raise ViewEvaluationError("single() met more than one value")
    return source


def _not(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    value = truth(source, "not()")
    return [] if value is None else _boolean(not value)


def _distinct(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    out: Collection = []
    for item in source:
        if not any(equal(item, seen) for seen in out):
            out.append(item)
    return out


def _join(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    separator = _string_arg(args, 0, ctx, "") or ""
    return [Item(separator.join(str(plain(i)) for i in source), "string")]


def _of_type(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    wanted = _type_arg(args, 0)
    return [i for i in source if type_matches(i, wanted)]


def _is(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    if len(source) > 1:
        raise ViewEvaluationError("is() needs a single value")
    return _boolean(type_matches(source[0], _type_arg(args, 0))) if source else []


def _extension(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    url = _string_arg(args, 0, ctx)
    out: Collection = []
    for item in source:
        if isinstance(item.value, dict):
            extensions = item.value.get("extension") or []
            out.extend(Item(e, "Extension") for e in extensions if isinstance(e, dict) and e.get("url") == url)
    return out


def _resource_key(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    out: Collection = []
    for item in source:
        if isinstance(item.value, dict) and "resourceType" in item.value and "id" in item.value:
            out.append(Item(f"{item.value['resourceType']}/{item.value['id']}", "string"))
    return out


def _reference_key(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    wanted = _type_arg(args, 0).removeprefix("FHIR.") if args else None
    out: Collection = []
    for item in source:
        ref = item.value.get("reference") if isinstance(item.value, dict) else None
        if not isinstance(ref, str) or ref.startswith("#"):
            continue
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) < 2 or (wanted is not None and parts[-2] != wanted):
            continue
        out.append(Item(f"{parts[-2]}/{parts[-1]}", "string"))
    return out


def _boundary(low: bool) -> Runner:
    def run(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
        precision = _int_arg(args, 0, ctx) if args else None
        out: Collection = []
        for item in source:
            found = boundary(item, low, precision)
            if found is not None:
                out.append(found)
        return out

    return run


def _string_fn(op: Callable[[str, tuple[Node, ...], Context], Item | None]) -> Runner:
    def run(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
        if not source:
            return []
        if len(source) > 1 or not isinstance(source[0].value, str):
            raise ViewEvaluationError("a string function needs a single string")
        result = op(source[0].value, args, ctx)
        return [] if result is None else [result]

    return run


def _convert(target: str) -> Runner:
    def run(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
        if len(source) != 1:
            return []
        value = source[0].value
        if not isinstance(value, str | bool | int | float | Decimal):
            return [Item(plain(source[0]), "string")] if target == "string" and not isinstance(value, dict) else []
        try:
            if target == "string":
                text = ("true" if value else "false") if isinstance(value, bool) else str(plain(source[0]))
                return [Item(text, "string")]
            if target == "integer" and not isinstance(value, bool | float | Decimal):
                return [Item(int(value), "integer")]
            if target == "decimal" and not isinstance(value, bool):
                return [Item(Decimal(str(value)), "decimal")]
        except (ValueError, InvalidOperation):
            return []
        return []

    return run


def _iif(source: Collection, args: tuple[Node, ...], ctx: Context) -> Collection:
    this = source if source else ctx.this
    chosen = truth(evaluate(args[0], this, ctx.within(this)), "iif()")
    if chosen:
        return evaluate(args[1], this, ctx.within(this))
    return evaluate(args[2], this, ctx.within(this)) if len(args) > 2 else []


def _text(value: str, args: tuple[Node, ...], ctx: Context, kind: str) -> Item | None:
    arg = _string_arg(args, 0, ctx)
    if arg is None:
        return None
    result = {"startsWith": value.startswith, "endsWith": value.endswith}.get(kind, value.__contains__)(arg)
    return Item(result, "boolean")


def _substring(value: str, args: tuple[Node, ...], ctx: Context) -> Item | None:
    start = _int_arg(args, 0, ctx)
    if start < 0 or start >= len(value):
        return None
    end = start + _int_arg(args, 1, ctx) if len(args) > 1 else None
    return Item(value[start:end], "string")


FUNCTIONS: dict[str, Function] = {
    "where": Function(_where, 1, 1),
    "select": Function(_select, 1, 1),
    "exists": Function(_exists, 0, 1),
    "all": Function(_all, 1, 1),
    "empty": Function(lambda s, a, c: _boolean(not s)),
    "count": Function(lambda s, a, c: [Item(len(s), "integer")]),
    "first": Function(lambda s, a, c: s[:1]),
    "last": Function(lambda s, a, c: s[-1:]),
    "tail": Function(lambda s, a, c: s[1:]),
    "skip": Function(lambda s, a, c: s[max(0, _int_arg(a, 0, c)) :], 1, 1),
    "take": Function(lambda s, a, c: s[: max(0, _int_arg(a, 0, c))], 1, 1),
    "single": Function(_single),
    "distinct": Function(_distinct),
    "not": Function(_not),
    "allTrue": Function(lambda s, a, c: _boolean(all(i.value is True for i in s))),
    "anyTrue": Function(lambda s, a, c: _boolean(any(i.value is True for i in s))),
    "hasValue": Function(lambda s, a, c: _boolean(len(s) == 1 and not isinstance(s[0].value, dict))),
    "iif": Function(_iif, 2, 3),
    "join": Function(_join, 0, 1),
    "ofType": Function(_of_type, 1, 1, type_args=True),
    "is": Function(_is, 1, 1, type_args=True),
    "as": Function(_of_type, 1, 1, type_args=True),
    "extension": Function(_extension, 1, 1),
    "getResourceKey": Function(_resource_key),
    "getReferenceKey": Function(_reference_key, 0, 1, type_args=True),
    "lowBoundary": Function(_boundary(True), 0, 1),
    "highBoundary": Function(_boundary(False), 0, 1),
    "toString": Function(_convert("string")),
    "toInteger": Function(_convert("integer")),
    "toDecimal": Function(_convert("decimal")),
    "startsWith": Function(_string_fn(lambda v, a, c: _text(v, a, c, "startsWith")), 1, 1),
    "endsWith": Function(_string_fn(lambda v, a, c: _text(v, a, c, "endsWith")), 1, 1),
    "contains": Function(_string_fn(lambda v, a, c: _text(v, a, c, "contains")), 1, 1),
    "upper": Function(_string_fn(lambda v, a, c: Item(v.upper(), "string"))),
    "lower": Function(_string_fn(lambda v, a, c: Item(v.lower(), "string"))),
    "trim": Function(_string_fn(lambda v, a, c: Item(v.strip(), "string"))),
    "length": Function(_string_fn(lambda v, a, c: Item(len(v), "integer"))),
    "substring": Function(_string_fn(_substring), 1, 2),
}


def check_call(name: str, args: tuple[Node, ...]) -> None:
    """Raise FhirPathSyntaxError unless ``name`` is a known function called with a valid arity."""
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise FhirPathSyntaxError(f"unsupported FHIRPath function '{name}()'")
    if not fn.min_args <= len(args) <= fn.max_args:
        raise FhirPathSyntaxError(f"FHIRPath function '{name}()' takes {fn.min_args} to {fn.max_args} arguments")
    if fn.type_args and any(type_name_of(a) is None for a in args):
        raise FhirPathSyntaxError(f"FHIRPath function '{name}()' takes a type name")
