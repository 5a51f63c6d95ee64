"""Epic: R4 with Epic OIDs and open.epic.com extensions.

Epic names its identifier and code systems with OIDs under ``1.2.840.114350``
(``1.2.840.114350.1.13.<customer>.<environment>.7.<category>.<item>…``). They
become stable canonical URIs ``urn:fhirlake:epic:<customer>.<environment>:<category>:<item>``
so that one customer's MRNs, CSNs and lists are the same system in every
resource; the original OID stays on the element in a ``source-system``
extension. Epic extensions are kept; the legal-sex extension also fills an
absent ``Patient.gender``.
"""

from __future__ import annotations

from typing import Any

from ingest.emr_adapters.fhir.adapter import FhirDialect

EPIC_ROOT = "urn:oid:1.2.840.114350."
SOURCE_SYSTEM = "urn:fhirlake:source-system"
EPIC_EXTENSION = "http://open.epic.com/FHIR/StructureDefinition/"
_CATEGORIES = {"2": "record", "3": "id-type", "4": "list", "5": "item", "10": "category-list"}
_SEX = {"female": "female", "male": "male", "unknown": "unknown", "nonbinary": "other", "x": "other"}


def epic_system(oid: str) -> str | None:
    """The canonical URI of an Epic OID, or None when it is not an Epic customer OID."""
    if not oid.startswith(EPIC_ROOT + "1.13."):
        return None
    parts = oid.removeprefix(EPIC_ROOT + "1.13.").split(".")
    if len(parts) < 5 or parts[2] != "7" or not all(p.isdigit() for p in parts):
        return None
    customer, environment, category, rest = parts[0], parts[1], parts[3], parts[4:]
    kind = _CATEGORIES.get(category, f"c{category}")
    return f"urn:fhirlake:epic:{customer}.{environment}:{kind}:{'.'.join(rest)}"


def map_systems(node: Any) -> int:
    """Replace every Epic OID system in ``node``; returns how many were replaced."""
    changed = 0
    if isinstance(node, dict):
        system = node.get("system")
        if isinstance(system, str) and system.startswith(EPIC_ROOT):
            canonical = epic_system(system)
            if canonical is not None:
                node["system"] = canonical
                node.setdefault("extension", []).append({"url": SOURCE_SYSTEM, "valueUri": system})
                changed += 1
        url = node.get("url")
        if isinstance(url, str) and url.startswith("https://open.epic.com/FHIR/StructureDefinition/"):
            node["url"] = "http://" + url.removeprefix("https://")
        for key, value in node.items():
            if key != "extension" or not isinstance(value, list):
                changed += map_systems(value)
            else:
                for ext in value:
                    if ext.get("url") != SOURCE_SYSTEM:
                        changed += map_systems(ext)
    elif isinstance(node, list):
        for item in node:
            changed += map_systems(item)
    return changed


class EpicAdapter(FhirDialect):
    name = "epic"
    version = "1.0.0"

    def recognizes(self, payload: bytes, content_type: str | None) -> bool:
        return super().recognizes(payload, content_type) and (
            b"1.2.840.114350" in payload or b"open.epic.com" in payload
        )

    def adjust(self, resource: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
        rtype = resource.get("resourceType")
        mapped = map_systems(resource)
        if mapped:
            warnings.append(f"{rtype}: {mapped} Epic OID systems mapped to canonical URIs")
        if rtype == "Patient" and "gender" not in resource:
            sex = _legal_sex(resource)
            if sex is not None:
                resource["gender"] = sex
                warnings.append("Patient.gender: taken from the Epic legal-sex extension")
        return resource


def _legal_sex(patient: dict[str, Any]) -> str | None:
    for ext in patient.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EPIC_EXTENSION + "extension/legal-sex":
            for coding in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                sex = _SEX.get(str(coding.get("code", "")).casefold())
                if sex:
                    return sex
    return None
