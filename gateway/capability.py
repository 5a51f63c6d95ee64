"""The CapabilityStatement: exactly what this server implements."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import fhirlake
from ingest.fhir_types import supported_types
from ingest.reads import PATIENT_TYPES
from ingest.search import PHI_PARAMS
from ingest.search_params import INCLUDES, params_of

_BLIND = "matched through a blind index (keyed hash of the normalized value); dates to the day"
_TARGETS = {
    "patient": ("Patient",),
    "subject": ("Patient",),
    "encounter": ("Encounter",),
    "performer": ("Practitioner", "Organization"),
    "requester": ("Practitioner",),
    "general-practitioner": ("Practitioner",),
    "practitioner": ("Practitioner",),
    "participant": ("Practitioner",),
    "organization": ("Organization",),
    "service-provider": ("Organization",),
    "partof": ("Organization",),
    "location": ("Location",),
    "medication": ("Medication",),
    "result": ("Observation",),
}
_AS_OF = (
    "fhirlake extension: read, search (by _id, patient or subject) and Patient/$everything as they stood at "
    "this instant, answered from the Iceberg snapshot current then (named in the Fhirlake-Snapshot header and "
    "in Bundle.meta.tag urn:fhirlake:as-of-snapshot); `fhirlake lake hold` keeps snapshots past expiry"
)
_INTERACTIONS = ("read", "vread", "update", "delete", "create", "search-type", "history-instance", "history-type")


def capability_statement(base: str) -> dict[str, Any]:
    resources = []
    for rtype in supported_types():
        params = [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
            {"name": "_asOf", "type": "date", "documentation": _AS_OF},
            {"name": "identifier", "type": "token", "documentation": _BLIND},
        ]
        if rtype in PATIENT_TYPES:
            params += [{"name": "patient", "type": "reference"}, {"name": "subject", "type": "reference"}]
        params += [
            {"name": p.name, "type": "token" if p.kind == "special" else p.kind}
            | ({"documentation": _BLIND} if p.name in PHI_PARAMS else {})
            for p in params_of(rtype).values()
        ]
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": c} for c in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchParam": params,
            "searchInclude": sorted(f"{s}:{p}" for s, p in INCLUDES if s == rtype),
            "searchRevInclude": sorted(
                f"{s}:{p}" for s, p in INCLUDES if rtype in _TARGETS.get(p, ("*",)) or p == "target"
            ),
        }
        if rtype == "Patient":
            entry["operation"] = [
                {"name": "purge", "definition": f"{base}/OperationDefinition/fhirlake-purge"},
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "software": {"name": "fhirlake", "version": fhirlake.__version__},
        "implementation": {"description": "fhirlake FHIR R4 gateway", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "operation": [
                    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
                    {"name": "run", "definition": "http://sql-on-fhir.org/OperationDefinition/$run"},
                ],
            }
        ],
    }
