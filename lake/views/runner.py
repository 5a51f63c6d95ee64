"""Running a compiled view over resources: rows per the SQL on FHIR v2 select semantics.

For each selection: iterate its ``forEach`` / ``forEachOrNull`` / ``repeat`` foci (or the
current focus), evaluate its columns, and take the cross product of the columns, each nested
``select`` and the concatenated ``unionAll`` branches. ``%rowIndex`` is the 0-based position
in the nearest enclosing iteration (0 at the resource level and for a ``forEachOrNull`` null row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from enum import StrEnum
from typing import Any

from lake.views.definition import ColumnDef, CompiledView, SelectDef
from lake.views.errors import ViewEvaluationError
from lake.views.evaluator import Context, evaluate
from lake.views.values import Collection, Item, plain

Row = dict[str, Any]


class ColumnAction(StrEnum):
    """What the caller's column policy does with a column: keep it, drop it, or null it out."""

    KEEP = "keep"
    DROP = "drop"
    MASK = "mask"


ColumnPolicy = Callable[[ColumnDef], ColumnAction]


class RowBuilder:
    """Turns resources into rows of one compiled view; masked and dropped columns are never evaluated."""

    def __init__(self, view: CompiledView, policy: ColumnPolicy | None = None) -> None:
        self.view = view
        actions = {c.name: (policy(c) if policy else ColumnAction.KEEP) for c in view.columns}
        self.skipped = frozenset(n for n, a in actions.items() if a is not ColumnAction.KEEP)
        self.columns = tuple(c for c in view.columns if actions[c.name] is not ColumnAction.DROP)

    def rows(self, resource: dict[str, Any]) -> list[Row]:
        """The rows of ``resource`` (none if it is of another type or fails the view's ``where``)."""
        if resource.get("resourceType") != self.view.resource:
            return []
        root = Item(resource, self.view.resource)
        ctx = Context(root, self.view.constants, 0, [root])
        for i, condition in enumerate(self.view.where):
            result = evaluate(condition, [root], ctx)
            if len(result) > 1 or (result and not isinstance(result[0].value, bool)):
                raise ViewEvaluationError(f"where[{i}].path must evaluate to a single boolean")
            if not result or result[0].value is not True:
                return []
        return self._select(self.view.root, [root], ctx)

    def _select(self, select: SelectDef, focus: Collection, ctx: Context) -> list[Row]:
        out: list[Row] = []
        for node, row_index in self._foci(select, focus, ctx):
            inner = replace(ctx, row_index=row_index, this=node, index=None)
            parts: list[list[Row]] = [[{c.name: self._value(c, node, inner) for c in select.columns}]]
            parts.extend(self._select(sub, node, inner) for sub in select.selects)
            if select.union_all:
                parts.append([row for branch in select.union_all for row in self._select(branch, node, inner)])
            out.extend(_product(parts))
        return out

    def _foci(self, select: SelectDef, focus: Collection, ctx: Context) -> list[tuple[Collection, int]]:
        if select.for_each is not None:
            items = evaluate(select.for_each, focus, ctx.within(focus))
            if not items and select.or_null:
                return [([], 0)]
            return [([item], i) for i, item in enumerate(items)]
        if select.repeat:
            return [([item], i) for i, item in enumerate(_descendants(select.repeat, focus, ctx))]
        return [(focus, ctx.row_index)]

    def _value(self, column: ColumnDef, focus: Collection, ctx: Context) -> Any:
        if column.name in self.skipped:
            return None
        items = evaluate(column.expr, focus, ctx)
        if column.collection:
            return [plain(i) for i in items]
        if len(items) > 1:
            raise ViewEvaluationError(
                f"column '{column.name}' returned more than one value; declare it with collection: true"
            )
        return plain(items[0]) if items else None


def _descendants(paths: tuple[Any, ...], focus: Collection, ctx: Context) -> Collection:
    """Everything ``paths`` reach from ``focus``, again and again, in depth-first pre-order."""
    out: Collection = []
    stack: list[tuple[Item, bool]] = [(item, False) for item in reversed(focus)]
    while stack:
        item, reached = stack.pop()
        if reached:
            out.append(item)
        children: Collection = []
        for path in paths:
            children.extend(evaluate(path, [item], ctx.within([item])))
        stack.extend((child, True) for child in reversed(children))
    return out


def _product(parts: list[list[Row]]) -> list[Row]:
    rows: list[Row] = [{}]
    for part in parts:
        if not part:
            return []
        rows = [{**left, **right} for left in rows for right in part]
    return rows


def iter_rows(builder: RowBuilder, resources: Iterable[dict[str, Any]]) -> Iterator[Row]:
    """Rows of every resource, one resource at a time (nothing is held beyond one resource's rows)."""
    for resource in resources:
        yield from builder.rows(resource)
