"""Dependencies point one way (DESIGN.md): gateway -> ingest -> {lake, security}; storage SDKs stay home.

The gateway may import any package's ``errors`` module: it owns the one error -> status table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "gateway": {"lake", "security", "pyiceberg", "pyarrow", "sqlite3", "cryptography"},
    "ingest": {"gateway", "pyiceberg", "pyarrow"},
    "lake": {"gateway", "ingest", "security"},
    "security": {"gateway", "ingest", "lake", "pyiceberg", "pyarrow"},
    "audit": {"gateway"},
    "dr": {"gateway"},
    "telemetry": {"gateway", "ingest", "lake", "security", "audit", "dr", "fhirlake"},
    "resilience": {"gateway", "ingest", "lake", "security", "audit", "dr", "pyiceberg", "pyarrow", "boto3"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return {m.split(".")[0] for m in modules if not m.endswith(".errors")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    }
    assert offenders == {}
