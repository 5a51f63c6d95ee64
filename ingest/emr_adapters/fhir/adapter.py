"""The generic adapter: FHIR R4 JSON, passed through unchanged (a BOM is dropped)."""

from __future__ import annotations

_BOM = b"\xef\xbb\xbf"


class FhirAdapter:
    name = "fhir"
    version = "1.0.0"

    def recognizes(self, payload: bytes, content_type: str | None) -> bool:
        head = payload.removeprefix(_BOM).lstrip()[:1]
        return head == b"{" and (content_type is None or "json" in content_type)

    def normalize(self, payload: bytes) -> bytes:
        return payload.removeprefix(_BOM)
