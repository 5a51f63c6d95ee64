"""The view engine beyond the conformance suite: streaming, column policies, types, writers,
PHI-free errors and the PHI reach analysis."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lake.views import ColumnAction, ColumnDef, ViewPlan, compile_view, phi_columns, run_view
from lake.views.errors import FhirPathSyntaxError, ViewDefinitionError, ViewError, ViewEvaluationError
from lake.views.evaluator import Context, evaluate
from lake.views.parser import parse
from lake.views.values import Item, plain

CANARY = "Zyxwv-Canary-4711"


def _patient(i: int, family: str = "Doe") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{i}",
        "active": i % 2 == 0,
        "name": [{"family": family, "given": ["A", "B"]}, {"family": f"{family}2"}],
        "telecom": [{"system": "phone", "value": "555"}],
    }


def _view(*columns: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resource": "Patient", "select": [{"column": list(columns)}], **extra}


def _eval(text: str, resource: dict[str, Any] | None = None) -> list[Any]:
    root = Item(resource or {"resourceType": "Patient"})
    return [plain(i) for i in evaluate(parse(text), [root], Context(root, {}, 0, [root]))]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("1 + 2 * 3", [7]),
        ("(1 + 2) * 3", [9]),
        ("7 div 2 = 3 and 7 mod 2 = 1", [True]),
        ("true or false and false", [True]),
        ("{} = 1", []),
        ("'a\\'b' + 'c'", ["a'bc"]),
        ("@2020-01 < @2020-02-03", [True]),
        ("@2020-01 = @2020-01-01", []),
        ("@2020-01-01T10:00:00+02:00 = @2020-01-01T08:00:00Z", [True]),
        ("(1 | 2 | 1).count()", [2]),
        ("'abc'.substring(1).upper()", ["BC"]),
        ("iif(false, 'x', 'y')", ["y"]),
    ],
)
def test_fhirpath_expressions(expr: str, expected: list[Any]) -> None:
    assert _eval(expr) == expected


def test_batches_stream_without_reading_every_resource() -> None:
    consumed = 0

    def resources() -> Iterator[dict[str, Any]]:
        nonlocal consumed
        for i in range(100_000):
            consumed += 1
            yield _patient(i)

    plan = ViewPlan(
        {"resource": "Patient", "select": [{"forEach": "name", "column": [{"name": "f", "path": "family"}]}]}
    )
    first = next(iter(plan.batches(resources(), batch_rows=10)))
    assert first.num_rows == 10 and consumed <= 6  # two rows per patient


def test_masked_and_dropped_columns_are_never_evaluated() -> None:
    # 'family' would fail (two names, not a collection): masking it means it is never computed.
    view = _view({"name": "id", "path": "id"}, {"name": "family", "path": "name.family"})
    with pytest.raises(ViewEvaluationError):
        run_view(view, [_patient(1)])

    def mask(column: ColumnDef) -> ColumnAction:
        return ColumnAction.MASK if column.name == "family" else ColumnAction.KEEP

    assert run_view(view, [_patient(1)], mask).to_pylist() == [{"id": "p1", "family": None}]
    table = run_view(view, [_patient(1)], lambda c: ColumnAction.DROP if c.name == "family" else ColumnAction.KEEP)
    assert table.column_names == ["id"]


def test_errors_never_echo_resource_values() -> None:
    resources = [_patient(1, CANARY)]
    failing = [
        _view({"name": "f", "path": "name.family"}),
        _view({"name": "id", "path": "id"}, where=[{"path": "name.family.first()"}]),
        _view({"name": "n", "path": "name.family.first()", "type": "integer"}),
        _view({"name": "n", "path": "name.family.first() + 1"}),
    ]
    for view in failing:
        with pytest.raises(ViewEvaluationError) as caught:
            run_view(view, resources)
        assert CANARY not in str(caught.value) and CANARY not in caught.value.message


@pytest.mark.parametrize(
    "view",
    [
        _view({"name": "a", "path": "id"}, {"name": "a", "path": "gender"}),
        _view({"name": "bad name", "path": "id"}),
        _view({"name": "a", "path": "name.soundex()"}),
        _view({"name": "a", "path": "name.where()"}),
        _view({"name": "a", "path": "name.first("}),
        {"resource": "Patient", "select": []},
        _view({"name": "a", "path": "(" * 5000 + "1" + ")" * 5000}),
        _view({"name": "a", "path": "(" * 500 + "1" + ")" * 500}),
        _view({"name": "a", "path": "-" * 3000 + "1"}),
        _view({"name": "a", "path": "@2020-13-01"}),
        _view({"name": "a", "path": "@2021-02-29T10:00Z"}),
        _view({"name": "a", "path": ".".join(["name"] * 800)}),
        {"resource": "Patient", "select": [{"forEach": "name", "forEachOrNull": "name", "column": []}]},
    ],
)
def test_invalid_views_fail_before_reading_data(view: dict[str, Any]) -> None:
    with pytest.raises(ViewDefinitionError):
        compile_view(view)


def test_unknown_functions_are_syntax_errors() -> None:
    with pytest.raises(FhirPathSyntaxError, match="soundex"):
        compile_view(_view({"name": "a", "path": "name.soundex()"}))


def test_column_types_declared_and_inferred() -> None:
    view = _view(
        {"name": "id", "path": "id"},
        {"name": "has_name", "path": "name.exists()"},
        {"name": "idx", "path": "%rowIndex"},
        {"name": "names", "path": "name.count()"},
        {"name": "given", "path": "name.given", "collection": True},
        {"name": "ratio", "path": "1.5", "type": "decimal"},
    )
    schema = ViewPlan(view).schema
    assert [f.type for f in schema] == [
        pa.string(),
        pa.bool_(),
        pa.int64(),
        pa.int64(),
        pa.list_(pa.string()),
        pa.float64(),
    ]


def test_writers(tmp_path: Path) -> None:
    view = _view({"name": "id", "path": "id"}, {"name": "given", "path": "name.given", "collection": True})
    plan = ViewPlan(view)
    resources = [_patient(i) for i in range(25)]
    assert plan.write(resources, "parquet", tmp_path / "v.parquet", batch_rows=10) == 25
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.num_rows == 25 and table.schema.field("given").type == pa.list_(pa.string())
    plan.write(resources, "csv", tmp_path / "v.csv")
    with (tmp_path / "v.csv").open() as handle:
        first = next(csv.DictReader(handle))
    assert first == {"id": "p0", "given": '["A","B"]'}
    plan.write(resources, "ndjson", tmp_path / "v.ndjson")
    assert json.loads((tmp_path / "v.ndjson").read_text().splitlines()[0]) == {"id": "p0", "given": ["A", "B"]}
    with pytest.raises(ViewDefinitionError):
        plan.write(resources, "xlsx", tmp_path / "v.xlsx")


PHI = ("identifier", "name", "telecom", "address", "birthDate", "deceasedDateTime", "contact", "extension")


@pytest.mark.parametrize(
    ("select", "flagged"),
    [
        ([{"column": [{"name": "c", "path": "gender"}]}], []),
        ([{"column": [{"name": "c", "path": "name.family"}]}], ["c"]),
        ([{"forEach": "telecom", "column": [{"name": "c", "path": "system"}]}], ["c"]),
        ([{"column": [{"name": "c", "path": "link.where(other.display = %resource.name.text.first()).type"}]}], ["c"]),
        ([{"column": [{"name": "c", "path": "deceased.ofType(boolean)"}]}], []),
        ([{"column": [{"name": "c", "path": "deceased.ofType(dateTime)"}]}], ["c"]),
        ([{"column": [{"name": "c", "path": "deceased"}]}], ["c"]),
        ([{"column": [{"name": "c", "path": "%resource"}]}], ["c"]),
        ([{"column": [{"name": "c", "path": "extension('http://x').value.ofType(code)"}]}], ["c"]),
        ([{"column": [{"name": "c", "path": "getResourceKey()"}]}], []),
        ([{"forEach": "contact", "column": [{"name": "c", "path": "gender"}]}], ["c"]),
        (
            [
                {
                    "unionAll": [
                        {"column": [{"name": "c", "path": "gender"}]},
                        {"column": [{"name": "c", "path": "address.city"}]},
                    ]
                }
            ],
            ["c"],
        ),
    ],
)
def test_phi_reach(select: list[dict[str, Any]], flagged: list[str]) -> None:
    assert phi_columns(compile_view({"resource": "Patient", "select": select}), PHI) == flagged


_ATOMS = ["name", "given", "value", "id", "$this", "%rowIndex", "%resource", "1", "-1", "2.5", "'x'", "true", "{}"]
_ATOMS += ["@2020", "@2020-01-01T10:00+01:00", "@T10:00", "extension", "deceased", "birthDate", "telecom"]
_FUNCS = ["first()", "exists()", "empty()", "count()", "not()", "join(',')", "ofType(string)", "where(%s)"]
_FUNCS += ["select(%s)", "all(%s)", "lowBoundary()", "highBoundary(%s)", "toInteger()", "toString()", "substring(%s)"]
_FUNCS += ["skip(%s)", "iif(%s,%s)", "startsWith(%s)", "getReferenceKey()", "extension(%s)", "single()", "is(integer)"]
_OPS = ["+", "-", "*", "/", "div", "mod", "&", "|", "=", "!=", "~", "<", ">=", "and", "or", "xor", "implies", "in"]


def _random_expression(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice(_ATOMS)
    if roll < 0.6:
        fn = rng.choice(_FUNCS)
        args = tuple(_random_expression(rng, depth + 1) for _ in range(fn.count("%s")))
        return f"{_random_expression(rng, depth + 1)}.{fn % args}"
    if roll < 0.9:
        return f"({_random_expression(rng, depth + 1)} {rng.choice(_OPS)} {_random_expression(rng, depth + 1)})"
    return f"{_random_expression(rng, depth + 1)}[{_random_expression(rng, depth + 1)}]"


def test_random_expressions_fail_only_with_view_errors() -> None:
    rng = random.Random(7)
    resources = [_patient(1, CANARY), {"resourceType": "Patient", "id": "p2", "deceasedDateTime": "2020-02"}]
    for _ in range(400):
        path = _random_expression(rng)
        view = _view({"name": "a", "path": path, "collection": True}, where=[{"path": f"({path}).exists()"}])
        try:
            run_view(view, resources)
        except ViewError as exc:
            assert CANARY not in exc.message
