"""The official SQL on FHIR v2 conformance suite, one test per case (tests/data/sql_on_fhir_v2).

Rows are compared as multisets (the suite's cases do not fix an order); ``expectColumns`` also
fixes the column order; ``expectError`` cases must raise the engine's ViewError.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lake.views import run_view
from lake.views.errors import ViewError

SUITE = Path(__file__).resolve().parent.parent / "data" / "sql_on_fhir_v2" / "tests"

# Cases this engine does not pass, with the reason (also listed in docs/views.md).
# strict=True: a case that starts passing fails the run, so the list is kept honest.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _cases() -> list[Any]:
    params = []
    for path in sorted(SUITE.glob("*.json")):
        suite = json.loads(path.read_text())
        for case in suite["tests"]:
            key = (path.stem, case["title"])
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[key])] if key in KNOWN_FAILURES else []
            params.append(pytest.param(suite["resources"], case, id=f"{path.stem}-{case['title']}", marks=marks))
    return params


def _normal(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 9)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps({k: _normal(v) for k, v in row.items()}, sort_keys=True)


def test_the_suite_is_complete() -> None:
    assert sum(len(json.loads(p.read_text())["tests"]) for p in SUITE.glob("*.json")) == 134


@pytest.mark.parametrize(("resources", "case"), _cases())
def test_case(resources: list[dict[str, Any]], case: dict[str, Any]) -> None:
    if case.get("expectError"):
        with pytest.raises(ViewError):
            run_view(case["view"], iter(resources))
        return
    table = run_view(case["view"], iter(resources))
    rows = table.to_pylist()
    if "expectCount" in case:
        assert len(rows) == case["expectCount"]
    if "expectColumns" in case:
        assert table.column_names == case["expectColumns"]
    if "expect" in case:
        for expected in case["expect"]:
            assert set(expected) == set(table.column_names)
        assert Counter(_canonical(r) for r in rows) == Counter(_canonical(r) for r in case["expect"])
