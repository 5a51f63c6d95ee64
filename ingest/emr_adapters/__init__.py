"""EMR adapters: one small protocol, one registry, one folder per source.

An adapter recognizes a source's payloads and turns one of them into a
canonical FHIR R4 ``transaction`` Bundle that ends with a ``Provenance``
(agent: the adapter and its version; entity: the SHA-256 of the raw payload).
Everything after that — validation, identity resolution, encryption, the
journal, audit — is the same path every FHIR write takes (``ingest.emr_ingest``).

Adding a source is adding a folder with an ``adapter.py`` and one line below.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ingest.errors import IngestError


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What an adapter may use besides the payload: a keyed id function and the time of receipt.

    ``stable_id`` derives a FHIR id from source keys (MRN, visit number…) with a
    tenant secret, so the same source record always lands on the same resource
    while the id reveals nothing about the identifier it came from.
    """

    stable_id: Callable[[str, str], str]
    received: datetime

    @classmethod
    def ephemeral(cls) -> AdapterContext:
        """A context with a random key (tests and dry runs: ids are stable only within it)."""
        return cls.keyed(os.urandom(32))

    @classmethod
    def keyed(cls, key: bytes, received: datetime | None = None) -> AdapterContext:
        def stable_id(kind: str, source_key: str) -> str:
            mac = hmac.new(key, f"{kind}\x1f{source_key}".encode(), hashlib.sha256).hexdigest()
            return f"{kind.lower()[:12]}-{mac[:40]}"

        return cls(stable_id, received or datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class Merge:
    """An ADT merge: ``prior`` (a Patient id) is replaced by ``survivor``; both stay, linked."""

    survivor: str
    prior: str


@dataclass(slots=True)
class Normalized:
    """One payload in canonical form: a transaction Bundle (bytes) and PHI-free warnings."""

    bundle: bytes
    warnings: list[str] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    message_control_id: str | None = None  # HL7 v2 MSH-10, echoed in the ACK


class EmrAdapter(Protocol):
    name: str
    version: str

    def recognizes(self, payload: bytes, content_type: str | None) -> bool:
        """Whether ``payload`` looks like this source's format (cheap, no full parse)."""
        ...

    def normalize(self, payload: bytes, context: AdapterContext) -> Normalized:
        """The canonical R4 transaction Bundle for ``payload`` (raises AdapterError, PHI-free)."""
        ...

    def reply(self, payload: bytes, error: IngestError | None) -> tuple[bytes, str] | None:
        """The source's own acknowledgement (body, media type) of the outcome, or None when it has none."""
        ...


# name -> "module:attribute", imported lazily
_REGISTRY: dict[str, str] = {
    "fhir": "ingest.emr_adapters.fhir.adapter:FhirAdapter",
    "epic": "ingest.emr_adapters.epic.adapter:EpicAdapter",
    "cerner": "ingest.emr_adapters.cerner.adapter:CernerAdapter",
    "athena": "ingest.emr_adapters.athena.adapter:AthenaAdapter",
    "hl7v2": "ingest.emr_adapters.hl7v2.adapter:Hl7v2Adapter",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def load(name: str) -> EmrAdapter:
    """The adapter registered as ``name``; raises KeyError for an unknown name."""
    module_name, _, attr = _REGISTRY[name].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    adapter: EmrAdapter = factory()
    return adapter
