"""The benchmark workload: the Synthea bundles re-keyed into as many distinct patients as needed."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
SYNTHEA = REPO / "tests" / "data" / "synthea_r4"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_COPY_SLOT = "__FHIRLAKE_BENCH_COPY__"
_SLOT = re.compile(f"({_UUID}|{_COPY_SLOT})")


@dataclass(frozen=True, slots=True)
class Template:
    """A bundle's text split into literals (even indexes) and slots (odd: a UUID or the copy slot)."""

    parts: tuple[str, ...]
    resources: int


@dataclass(slots=True)
class Workload:
    bundles: list[bytes] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # resources per bundle
    resources: list[bytes] = field(default_factory=list)  # every resource alone, for the baseline

    @property
    def total(self) -> int:
        return sum(self.sizes)


def _mark(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the per-copy slots: Bundle.identifier and distinct Patient identifiers."""
    doc["identifier"] = {"system": "urn:fhirlake:bench", "value": str(uuid.uuid4())}
    for entry in doc["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] != "Patient":
            continue
        for ident in resource.get("identifier", []):
            if isinstance(ident.get("value"), str) and not re.fullmatch(_UUID, ident["value"]):
                ident["value"] = f"{ident['value']}-{_COPY_SLOT}"
        bench_id = {"system": "urn:fhirlake:bench:patient", "value": str(uuid.uuid4())}
        resource.setdefault("identifier", []).append(bench_id)
    return doc


def load_templates(directory: Path) -> list[Template]:
    templates = []
    for path in sorted(directory.glob("*.json")):
        doc = _mark(orjson.loads(path.read_bytes()))
        text = orjson.dumps(doc).decode()
        templates.append(Template(tuple(_SLOT.split(text)), len(doc["entry"])))
    return templates


def rekey(template: Template, copy: int) -> bytes:
    """One copy of ``template``: every UUID replaced consistently by a fresh one."""
    fresh: dict[str, str] = {}
    out = list(template.parts)
    for i in range(1, len(out), 2):
        slot = out[i].lower()
        if slot == _COPY_SLOT.lower():
            out[i] = str(copy)
        else:
            out[i] = fresh.get(slot) or fresh.setdefault(slot, str(uuid.uuid4()))
    return "".join(out).encode()


def build_workload(target: int) -> Workload:
    templates = load_templates(SYNTHEA)
    workload = Workload()
    copy = total = 0
    while total < target:
        template = templates[copy % len(templates)]
        total += template.resources
        raw = rekey(template, copy)
        workload.bundles.append(raw)
        workload.sizes.append(template.resources)
        workload.resources.extend(orjson.dumps(e["resource"]) for e in orjson.loads(raw)["entry"])
        copy += 1
    return workload


# -- other load on the machine --------------------------------------------------------------------
