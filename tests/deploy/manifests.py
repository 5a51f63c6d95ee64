"""Loading the Kustomize base of ``deploy/kubernetes/base`` for the deploy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes" / "base"

Manifest = dict[str, Any]


def kustomization() -> Manifest:
    doc: Manifest = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return doc


def manifests() -> list[Manifest]:
    """Every object of every resource file the kustomization lists, in order."""
    docs: list[Manifest] = []
    for name in kustomization()["resources"]:
        docs.extend(doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc)
    return docs


def of_kind(kind: str) -> list[Manifest]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def named(kind: str, name: str) -> Manifest:
    (doc,) = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    return doc


def containers(deployment: Manifest) -> list[Manifest]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def env_of(container: Manifest) -> dict[str, str]:
    return {var["name"]: var.get("value", "") for var in container.get("env", [])}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """True if a matchLabels selector (no expressions in this base) selects pods with these labels."""
    assert set(selector) == {"matchLabels"}, "selectors here use matchLabels only"
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())
