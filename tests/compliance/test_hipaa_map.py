"""The HIPAA map is true to the repository: every file and test it names exists, every spec has a row.

Also checks the other compliance pages: backticked repository paths and ``path::test`` names
anywhere under docs/compliance/ must exist, so a rename breaks CI instead of the compliance file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPLIANCE = ROOT / "docs" / "compliance"
MAP = COMPLIANCE / "hipaa-map.md"

SPECS = [
    "164.312(a)(1)",
    "164.312(a)(2)(i)",
    "164.312(a)(2)(ii)",
    "164.312(a)(2)(iii)",
    "164.312(a)(2)(iv)",
    "164.312(b)",
    "164.312(c)(1)",
    "164.312(c)(2)",
    "164.312(d)",
    "164.312(e)(1)",
    "164.312(e)(2)(i)",
    "164.312(e)(2)(ii)",
    "164.308(a)(1)(ii)(D)",
    "164.308(a)(7)(i)",
    "164.308(a)(7)(ii)(A)",
    "164.308(a)(7)(ii)(B)",
    "164.308(a)(7)(ii)(C)",
    "164.308(a)(7)(ii)(D)",
    "164.308(a)(7)(ii)(E)",
    "164.316(b)(1)(i)",
    "164.316(b)(1)(ii)",
    "164.316(b)(2)(i)",
    "164.316(b)(2)(ii)",
    "164.316(b)(2)(iii)",
]
TOP_DIRS = ("audit", "dr", "docs", "fhirlake", "gateway", "ingest", "lake", "security", "terraform", "tests", "bench")
_TICKED = re.compile(r"`([^`\s]+)`")
_TEST_REF = re.compile(r"^([\w./-]+\.py)::(\w+)$")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def _references(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Repository paths and (file, test) pairs named in backticks."""
    paths: set[str] = set()
    tests: set[tuple[str, str]] = set()
    for token in _TICKED.findall(text):
        match = _TEST_REF.match(token)
        if match:
            tests.add((match.group(1), match.group(2)))
        elif token.split("/", 1)[0] in TOP_DIRS and "/" in token and "*" not in token and "<" not in token:
            paths.add(token.rstrip("/"))
    return paths, tests


def _problems(text: str, root: Path) -> list[str]:
    problems: list[str] = []
    paths, tests = _references(text)
    for path in sorted(paths):
        if not (root / path).exists():
            problems.append(f"file {path} does not exist")
    for path, name in sorted(tests):
        if not (root / path).is_file():
            problems.append(f"test file {path} does not exist")
        elif name not in _test_functions(root / path):
            problems.append(f"{path} has no test {name}")
    return problems


def _rows() -> list[list[str]]:
    rows = []
    for line in MAP.read_text().splitlines():
        if line.startswith("| 164."):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_every_named_file_and_test_exists() -> None:
    paths, tests = _references(MAP.read_text())
    assert len(paths) > 40 and len(tests) > 50, "the map names too little to be a map"
    assert _problems(MAP.read_text(), ROOT) == []


@pytest.mark.parametrize("page", sorted(COMPLIANCE.glob("*.md")), ids=lambda p: p.name)
def test_every_compliance_page_names_only_what_exists(page: Path) -> None:
    assert _problems(page.read_text(), ROOT) == []


def test_every_specification_has_a_row() -> None:
    specs = [row[0].split(" ", 1)[0] for row in _rows()]
    for spec in SPECS:
        assert spec in specs, f"{spec} has no row in hipaa-map.md"
    assert len(specs) == len(set(specs)), "a specification appears twice"


def test_every_row_names_its_code_and_tests_or_says_who_owns_it() -> None:
    for row in _rows():
        assert len(row) == 4, f"{row[0]}: expected 4 columns, got {len(row)}"
        spec, how, files, tests = row
        assert how, spec
        has_files = bool(_references(files)[0])
        has_tests = bool(_references(tests)[1])
        owned_elsewhere = "planned (issue" in how or "**organization**" in how
        assert (has_files and has_tests) or owned_elsewhere, f"{spec}: no file and test, and no owner named"


def test_the_checker_notices_a_missing_test(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_real() -> None:\n    pass\n")
    text = "`tests/test_x.py::test_real`, `tests/test_x.py::test_gone`, `security/nothing.py`"
    assert _problems(text, tmp_path) == [
        "file security/nothing.py does not exist",
        "tests/test_x.py has no test test_gone",
    ]
