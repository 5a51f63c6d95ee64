"""Oracle Health (Cerner): searchset Bundles, loose narratives, integer ``meta.versionId``.

Search results are unwrapped (``search.mode=outcome`` entries are skipped).
A narrative ``div`` without the XHTML namespace gets it; an HTML-escaped one is
unescaped first; one that still is not well-formed XHTML is dropped with a
warning (``text`` is derived, the structured data stays).
"""

from __future__ import annotations

import html
import xml.parsers.expat
from typing import Any

from ingest.emr_adapters.fhir.adapter import FhirDialect

XHTML = "http://www.w3.org/1999/xhtml"


def _well_formed(div: str) -> bool:
    """Whether ``div`` parses as XML (no DTDs, no entity expansion)."""

    def refuse(*_: object) -> None:
        raise ValueError("doctype")

    parser = xml.parsers.expat.ParserCreate()
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(div, True)
    except (xml.parsers.expat.ExpatError, ValueError):
        return False
    return True


def repair_div(div: str) -> str | None:
    """The narrative as well-formed namespaced XHTML, or None when it cannot be repaired."""
    text = div.strip()
    if text.startswith("&lt;"):
        text = html.unescape(text)
    if not text.startswith("<div"):
        return None
    if "xmlns=" not in text[: text.find(">") + 1]:
        text = f'<div xmlns="{XHTML}"' + text[4:]
    return text if _well_formed(text) else None


class CernerAdapter(FhirDialect):
    name = "cerner"
    version = "1.0.0"

    def recognizes(self, payload: bytes, content_type: str | None) -> bool:
        return super().recognizes(payload, content_type) and (b"cerner" in payload.lower() or b"searchset" in payload)

    def unwrap(self, doc: dict[str, Any], warnings: list[str]) -> list[dict[str, Any]]:
        if doc.get("resourceType") == "Bundle" and doc.get("type") == "searchset":
            entries = doc.get("entry") or []
            kept = [
                e for e in entries if not (isinstance(e, dict) and (e.get("search") or {}).get("mode") == "outcome")
            ]
            if len(kept) != len(entries):
                warnings.append(f"Bundle.entry: {len(entries) - len(kept)} search outcome entries skipped")
            doc = {**doc, "entry": kept}
        return super().unwrap(doc, warnings)

    def adjust(self, resource: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
        rtype = resource.get("resourceType")
        text = resource.get("text")
        if isinstance(text, dict) and isinstance(text.get("div"), str):
            fixed = repair_div(text["div"])
            if fixed is None:
                del resource["text"]
                warnings.append(f"{rtype}.text: narrative is not well-formed XHTML; dropped")
            elif fixed != text["div"]:
                text["div"] = fixed
                warnings.append(f"{rtype}.text.div: narrative repaired (namespace or HTML escaping)")
        return resource
