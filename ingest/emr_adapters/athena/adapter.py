"""athenahealth: subscription-notification Bundles (R4 Subscriptions Backport, ``type=history``).

The Bundle is unwrapped into its resources. ``SubscriptionStatus`` — and any
other type R4 does not define — is skipped with a warning; an id-only
notification (no resource at all) is rejected with a clear reason, so it lands
in the dead-letter store instead of vanishing.
"""

from __future__ import annotations

from typing import Any

from ingest.emr_adapters.fhir.adapter import FhirDialect

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification"


class AthenaAdapter(FhirDialect):
    name = "athena"
    version = "1.0.0"
    skip_unknown_types = True

    def recognizes(self, payload: bytes, content_type: str | None) -> bool:
        return super().recognizes(payload, content_type) and (b"SubscriptionStatus" in payload or b"athena" in payload)

    def unwrap(self, doc: dict[str, Any], warnings: list[str]) -> list[dict[str, Any]]:
        if doc.get("resourceType") == "Bundle" and doc.get("type") == "history":
            # A notification lists what happened; what we store is each resource as it now is.
            doc = {**doc, "type": "collection"}
        return super().unwrap(doc, warnings)
