"""EMR adapters: one small protocol, one registry, one folder per source.

An adapter recognizes a source's payloads and turns them into canonical FHIR R4
JSON. This release registers the generic ``fhir`` adapter (R4 JSON as sent);
vendor dialects plug in by adding a folder and a registry line.
"""

from __future__ import annotations

import importlib
from typing import Protocol


class EmrAdapter(Protocol):
    name: str
    version: str

    def recognizes(self, payload: bytes, content_type: str | None) -> bool: ...

    def normalize(self, payload: bytes) -> bytes:
        """Canonical FHIR R4 JSON (a Bundle) for ``payload``."""
        ...


# name -> "module:attribute", imported lazily
_REGISTRY: dict[str, str] = {
    "fhir": "ingest.emr_adapters.fhir.adapter:FhirAdapter",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def load(name: str) -> EmrAdapter:
    """The adapter registered as ``name``; raises KeyError for an unknown name."""
    module_name, _, attr = _REGISTRY[name].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    adapter: EmrAdapter = factory()
    return adapter
