"""The seam where field-level encryption transforms rows before they are stored.

Every resource body passes through a ``RowSealer`` on its way into the journal
and the lake, and back out on reads. The embedded default of this release is
``PlaintextSealer``; envelope encryption (AES-256-GCM under per-patient data
keys) plugs in here without touching ingest or the lake.
"""

from __future__ import annotations

from typing import Protocol


class RowSealer(Protocol):
    def seal(self, resource_type: str, resource_id: str, version: int, body: bytes) -> bytes: ...

    def open(self, resource_type: str, resource_id: str, version: int, sealed: bytes) -> bytes: ...


class PlaintextSealer:
    """Stores bodies as given. Not for PHI in production (see docs/compliance)."""

    def seal(self, resource_type: str, resource_id: str, version: int, body: bytes) -> bytes:
        return body

    def open(self, resource_type: str, resource_id: str, version: int, sealed: bytes) -> bytes:
        return sealed
