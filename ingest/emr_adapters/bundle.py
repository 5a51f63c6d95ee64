"""From resources to the canonical transaction Bundle, with the Provenance every adapter attaches."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from ingest.emr_adapters.errors import AdapterError

RAW_HASH_SYSTEM = "urn:fhirlake:raw-payload:sha256"
ADAPTER_SYSTEM = "urn:fhirlake:emr-adapter"
_BOM = b"\xef\xbb\xbf"


def payload_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def strip_bom(payload: bytes) -> bytes:
    return payload.removeprefix(_BOM)


def parse_json(payload: bytes) -> Any:
    """The JSON document of ``payload`` (BOM dropped); AdapterError when it is not JSON."""
    try:
        return orjson.loads(strip_bom(payload))
    except orjson.JSONDecodeError:
        raise AdapterError("the payload is not valid JSON") from None


def ndjson_lines(payload: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, resource)`` of each non-blank NDJSON line (AdapterError names the bad line)."""
    for number, line in enumerate(strip_bom(payload).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AdapterError(f"NDJSON line {number} is not valid JSON", where=f"line[{number}]") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
            raise AdapterError(f"NDJSON line {number} is not a FHIR resource", where=f"line[{number}]")
        yield number, doc


def is_ndjson(payload: bytes, content_type: str | None) -> bool:
    if content_type and "ndjson" in content_type:
        return True
    lines = strip_bom(payload).strip().splitlines()
    return len(lines) > 1 and lines[0].lstrip().startswith(b"{") and lines[0].rstrip().endswith(b"}")


def entry_for(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    """A transaction entry: PUT ``Type/id`` when the resource has an id (idempotent), else POST."""
    rtype = resource["resourceType"]
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return {"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
    url = full_url if full_url and full_url.startswith("urn:uuid:") else f"urn:uuid:{uuid.uuid4()}"
    return {"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": rtype}}


def provenance(adapter: str, version: str, raw_hash: str, targets: list[str], received: datetime) -> dict[str, Any]:
    """Who made these resources (the adapter, its version) from what (the raw payload, by hash)."""
    return {
        "resourceType": "Provenance",
        "id": f"{adapter}-{raw_hash[:40]}",
        "target": [{"reference": t} for t in targets[:1000]],
        "recorded": received.isoformat(timespec="milliseconds"),
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle", "code": "transform"}]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": ADAPTER_SYSTEM, "value": f"{adapter}/{version}"},
                    "display": f"fhirlake {adapter} adapter {version}",
                },
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": RAW_HASH_SYSTEM, "value": raw_hash},
                    "display": f"raw {adapter} payload",
                },
            }
        ],
    }


def transaction(
    entries: Iterable[dict[str, Any]], *, adapter: str, version: str, raw: bytes, received: datetime
) -> bytes:
    """The canonical transaction: ``entries`` plus a Provenance targeting each of them."""
    listed = list(entries)
    if not listed:
        raise AdapterError("the payload holds no resource this adapter can store")
    targets = [str(e.get("fullUrl") or e["request"]["url"]) for e in listed]
    prov = provenance(adapter, version, payload_hash(raw), targets, received)
    listed.append(entry_for(prov))
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": listed})
