"""The CapabilityStatement: exactly what this server implements."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import fhirlake
from ingest.fhir_types import supported_types
from ingest.reads import PATIENT_TYPES, blind_params

_INTERACTIONS = ("read", "vread", "update", "delete", "create", "search-type")


def capability_statement(base: str) -> dict[str, Any]:
    resources = []
    for rtype in supported_types():
        params = [
            {"name": "_id", "type": "token"},
            {"name": "identifier", "type": "token"},
        ]
        if rtype in PATIENT_TYPES:
            params += [{"name": "patient", "type": "reference"}, {"name": "subject", "type": "reference"}]
        params += [
            {
                "name": p,
                "type": "date" if p == "birthdate" else "string" if p == "family" else "token",
                "documentation": "exact match of the normalized value, through a blind index",
            }
            for p in blind_params(rtype)
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
        }
        if rtype == "Patient":
            entry["operation"] = [{"name": "purge", "definition": f"{base}/OperationDefinition/fhirlake-purge"}]
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
            }
        ],
    }
