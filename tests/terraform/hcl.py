"""Parsed view of ``terraform/`` for the tests: every .tf file through python-hcl2, quotes stripped.

``Tree`` answers the questions the tests ask: the resources or data sources of one type (with the
file they are in), the module calls of a root, the variables of a module and their defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
ROOTS = ("primary", "dr")
_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False)


@dataclass(frozen=True)
class Block:
    """One labelled block (resource, data, module, variable, output) and where it is."""

    kind: str
    type: str
    name: str
    body: dict[str, Any]
    path: Path

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(TERRAFORM)}: {self.kind} {self.type} {self.name}".strip()


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@cache
def parse(path: Path) -> dict[str, Any]:
    """The file as python-hcl2 reads it, without its bookkeeping keys."""
    with path.open() as handle:
        return _clean(hcl2.load(handle, serialization_options=_OPTIONS))  # type: ignore[no-any-return]


def tf_files(under: Path = TERRAFORM) -> list[Path]:
    return sorted(under.rglob("*.tf"))


def blocks(kind: str, type_: str | None = None, under: Path = TERRAFORM) -> Iterator[Block]:
    """Every ``kind`` block (``resource``, ``data``: two labels; ``module``, ``variable``, ``output``: one)."""
    for path in tf_files(under):
        for entry in parse(path).get(kind, []):
            for first, inner in entry.items():
                if kind in ("resource", "data"):
                    for name, body in inner.items():
                        if type_ is None or first == type_:
                            yield Block(kind, first, name, body, path)
                else:
                    yield Block(kind, "", first, inner, path)


def one(block_list: list[Any]) -> Any:
    """The single nested block python-hcl2 returns as a one-element list."""
    assert isinstance(block_list, list) and len(block_list) == 1, block_list
    return block_list[0]


def module_calls(root: str, source_suffix: str | None = None) -> list[Block]:
    """Module blocks of one root, optionally only those whose source ends with ``source_suffix``."""
    calls = list(blocks("module", under=TERRAFORM / root))
    if source_suffix is None:
        return calls
    return [c for c in calls if str(c.body["source"]).endswith(source_suffix)]


def variables(directory: Path) -> dict[str, dict[str, Any]]:
    """Variable name -> body for the module or root in ``directory``."""
    return {b.name: b.body for b in blocks("variable", under=directory) if b.path.parent == directory}


def resolve_number(value: Any, directory: Path) -> float:
    """A literal number or ``${var.x}`` with a numeric default in ``directory``."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).removeprefix("${").removesuffix("}")
    name, plus, extra = text.partition("+")  # e.g. var.audit_retention_days + 1
    name = name.strip()
    assert name.startswith("var."), f"cannot resolve {value!r} to a number"
    default = variables(directory)[name[4:]].get("default")
    assert isinstance(default, int | float), f"{name} has no numeric default"
    return float(default) + (float(extra) if plus else 0.0)
