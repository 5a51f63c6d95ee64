"""The generic adapter: FHIR R4 JSON — a resource, a Bundle of any type, or NDJSON.

Vendor dialects (Epic, Oracle Health/Cerner, athenahealth) subclass ``FhirDialect``
and override its two hooks: ``unwrap`` (which resources a document carries) and
``adjust`` (vendor fixes of one resource). Repairs of R4B/STU3 spellings whose
meaning is clear are shared; anything else is left to strict validation.
"""

from __future__ import annotations

import uuid
from typing import Any

from ingest.emr_adapters import AdapterContext, Normalized
from ingest.emr_adapters.bundle import entry_for, is_ndjson, ndjson_lines, parse_json, strip_bom, transaction
from ingest.emr_adapters.errors import AdapterError
from ingest.emr_adapters.fhir.repair import repair
from ingest.emr_adapters.normalize import canonical_codings
from ingest.errors import IngestError
from ingest.fhir_types import is_supported

_WRITES = frozenset({"POST", "PUT", "DELETE"})
_UNWRAPPED = frozenset({"collection", "searchset", "history", "document", "message"})


class FhirDialect:
    name = "fhir"
    version = "1.1.0"
    skip_unknown_types = False  # strict: an R5-only or misspelt type is an error, not a silent drop

    def recognizes(self, payload: bytes, content_type: str | None) -> bool:
        head = strip_bom(payload).lstrip()[:1]
        return head == b"{" and (content_type is None or "json" in content_type)

    def normalize(self, payload: bytes, context: AdapterContext) -> Normalized:
        warnings: list[str] = []
        if is_ndjson(payload, None):
            entries = [self._entry({"resource": doc}, warnings) for _, doc in ndjson_lines(payload)]
        else:
            doc = parse_json(payload)
            if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
                raise AdapterError("the payload is not a FHIR resource (no resourceType)")
            entries = [self._entry(e, warnings) for e in self.unwrap(doc, warnings)]
        kept = [e for e in entries if e is not None]
        bundle = transaction(kept, adapter=self.name, version=self.version, raw=payload, received=context.received)
        return Normalized(bundle, warnings)

    def reply(self, payload: bytes, error: IngestError | None) -> tuple[bytes, str] | None:
        return None

    def unwrap(self, doc: dict[str, Any], warnings: list[str]) -> list[dict[str, Any]]:
        """The entries (``resource`` and, for transactions, ``request``) a document carries."""
        if doc["resourceType"] != "Bundle":
            return [{"resource": doc}]
        raw_entries = doc.get("entry") or []
        if not isinstance(raw_entries, list):
            raise AdapterError("Bundle.entry is not a list", where="Bundle.entry")
        kind = doc.get("type")
        if kind in ("transaction", "batch"):
            if kind == "batch":
                warnings.append("Bundle.type: batch applied as one transaction")
            return [e for e in raw_entries if isinstance(e, dict)]
        if kind not in _UNWRAPPED:
            raise AdapterError("Bundle.type is missing or unknown", where="Bundle.type")
        out = []
        for index, entry in enumerate(raw_entries):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                out.append({"resource": entry["resource"], "fullUrl": entry.get("fullUrl")})
            else:
                warnings.append(f"Bundle.entry[{index}]: no resource (id-only entry) skipped")
        return out

    def adjust(self, resource: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
        """Vendor fixes of one resource; None drops it (with a warning)."""
        return resource

    def _entry(self, raw: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
        request = raw.get("request")
        method = str(request.get("method", "")).upper() if isinstance(request, dict) else ""
        if request is not None and method not in _WRITES:
            warnings.append(f"Bundle.entry: {method or 'a request without method'} entry skipped")
            return None
        resource = raw.get("resource")
        if method == "DELETE":
            return {"request": request}
        if not isinstance(resource, dict):
            raise AdapterError("a Bundle entry has no resource", where="Bundle.entry.resource")
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not is_supported(rtype):
            if isinstance(rtype, str) and rtype.isalpha() and len(rtype) < 64:
                if self.skip_unknown_types:
                    warnings.append(f"{rtype}: not a FHIR R4 resource type; skipped")
                    return None
                raise AdapterError(f"{rtype} is not a FHIR R4 resource type this server stores", where="resourceType")
            raise AdapterError("a resource has no valid resourceType", where="resourceType")
        adjusted = self.adjust(resource, warnings)
        if adjusted is None:
            return None
        repair(adjusted, warnings)
        canonical_codings(adjusted)
        if request is not None:
            entry = {"resource": adjusted, "request": request}
            if raw.get("fullUrl"):
                entry["fullUrl"] = raw["fullUrl"]
            elif method == "POST":
                entry["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
            return entry
        return entry_for(adjusted, raw.get("fullUrl"))


class FhirAdapter(FhirDialect):
    """Generic FHIR R4 (resources, Bundles, NDJSON) with the shared repairs only."""
