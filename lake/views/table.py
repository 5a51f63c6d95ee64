"""Rows to Arrow: column types from the view, record batches of bounded size.

FHIR column types map to Arrow as: boolean -> bool; integer, positiveInt, unsignedInt,
integer64 -> int64; decimal -> float64; every other FHIR primitive (string, code, id, uri,
date, dateTime, instant, time, base64Binary, ...) -> string, keeping FHIR's own text form
(partial dates stay partial). ``collection: true`` columns are lists of that type. Columns
without a ``type`` get one inferred from their FHIRPath expression (string when unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pyarrow as pa

from lake.views.ast import Binary, Call, Literal, Node, TypeOp, Var, type_name_of
from lake.views.definition import ColumnDef
from lake.views.errors import ViewEvaluationError
from lake.views.runner import Row
from lake.views.values import normalize_type

DEFAULT_BATCH_ROWS = 8192
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
_BOOLEAN_CALLS = frozenset(
    {"exists", "empty", "not", "all", "allTrue", "anyTrue", "hasValue", "startsWith", "endsWith", "contains", "is"}
)
_INTEGER_CALLS = frozenset({"count", "length", "toInteger"})
_PASS_THROUGH = frozenset({"first", "last", "single", "where", "tail", "skip", "take", "distinct"})
_BOOLEAN_OPS = frozenset({"and", "or", "xor", "implies", "=", "!=", "~", "!~", "<", ">", "<=", ">=", "in", "contains"})


def infer_type(node: Node) -> str | None:
    """The FHIR type an expression yields when it can be told from the expression alone."""
    if isinstance(node, Literal):
        return node.type
    if isinstance(node, Var) and node.name == "rowIndex":
        return "integer"
    if isinstance(node, Binary):
        return "boolean" if node.op in _BOOLEAN_OPS else None
    if isinstance(node, TypeOp):
        return "boolean" if node.op == "is" else normalize_type(node.type_name)
    if isinstance(node, Call):
        if node.name in _BOOLEAN_CALLS:
            return "boolean"
        if node.name in _INTEGER_CALLS:
            return "integer"
        if node.name == "ofType" and node.args:
            name = type_name_of(node.args[0])
            return normalize_type(name) if name else None
        if node.name in _PASS_THROUGH and node.target is not None:
            return infer_type(node.target)
    return None


def arrow_type(column: ColumnDef) -> pa.DataType:
    """The Arrow type of ``column``."""
    fhir_type = column.type or infer_type(column.expr) or "string"
    if fhir_type == "boolean":
        base = pa.bool_()
    elif fhir_type in _INTEGERS:
        base = pa.int64()
    elif fhir_type == "decimal":
        base = pa.float64()
    else:
        base = pa.string()
    return pa.list_(base) if column.collection else base


def schema_of(columns: Iterable[ColumnDef]) -> pa.Schema:
    """The Arrow schema of a view's output columns, in order."""
    return pa.schema([pa.field(c.name, arrow_type(c)) for c in columns])


def _cast(value: Any, kind: pa.DataType, name: str) -> Any:
    if value is None:
        return None
    if pa.types.is_list(kind):
        return [_cast(v, kind.value_type, name) for v in value]
    if pa.types.is_string(kind):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return orjson.dumps(value).decode()
        return str(value)
    if pa.types.is_boolean(kind) and isinstance(value, bool):
        return value
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if pa.types.is_int64(kind) and numeric and float(value).is_integer():
        return int(value)
    if pa.types.is_float64(kind) and numeric:
        return float(value)
    raise ViewEvaluationError(f"column '{name}' has a value that does not fit its type")


def to_batch(rows: list[Row], schema: pa.Schema) -> pa.RecordBatch:
    """One record batch of ``rows``; raises ViewEvaluationError when a value does not fit its column."""
    arrays = []
    for field in schema:
        values = [_cast(row.get(field.name), field.type, field.name) for row in rows]
        arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def batches(rows: Iterable[Row], schema: pa.Schema, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``batch_rows`` rows, produced as ``rows`` are consumed."""
    pending: list[Row] = []
    for row in rows:
        pending.append(row)
        if len(pending) >= batch_rows:
            yield to_batch(pending, schema)
            pending = []
    if pending:
        yield to_batch(pending, schema)
