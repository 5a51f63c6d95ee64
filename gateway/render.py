"""Response bundles and headers built from use-case results."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import orjson

from gateway.errors import outcome, outcome_of, status_line, status_of
from ingest.errors import Issue
from ingest.history import Page
from ingest.reads import SearchResult, StoredResource
from ingest.service import Outcome, ReadResult
from ingest.transaction import EntryResult, instant


def etag(version: int) -> str:
    return f'W/"{version}"'


def location(base: str, rtype: str, rid: str, version: int) -> str:
    return f"{base}/{rtype}/{rid}/_history/{version}"


def resource_headers(base: str, res: EntryResult | StoredResource, with_location: bool) -> dict[str, str]:
    rtype = res.resource_type
    rid, version = res.id if isinstance(res, StoredResource) else res.resource_id, res.version
    updated = res.last_updated_us
    headers: dict[str, str] = {}
    if version is not None:
        headers["ETag"] = etag(version)
    if updated is not None:
        headers["Last-Modified"] = _http_date(updated)
    if with_location and rid is not None and version is not None:
        headers["Location"] = location(base, rtype, rid, version)
    return headers


def _http_date(us: int) -> str:
    from email.utils import formatdate

    return formatdate(us / 1_000_000, usegmt=True)


def _write_entry(base: str, result: EntryResult, prefer: str) -> dict[str, Any]:
    if result.error is not None:
        status = status_of(result.error)
        return {"response": {"status": status_line(status), "outcome": outcome_of(result.error)}}
    response: dict[str, Any] = {"status": status_line(result.status)}
    entry: dict[str, Any] = {}
    if result.resource_id is not None and result.version is not None:
        ref = f"{result.resource_type}/{result.resource_id}"
        entry["fullUrl"] = f"{base}/{ref}"
        response["location"] = f"{ref}/_history/{result.version}"
        response["etag"] = etag(result.version)
    if result.last_updated_us is not None:
        response["lastModified"] = instant(result.last_updated_us)
    if prefer == "representation" and result.body is not None and result.status != 204:
        entry["resource"] = orjson.Fragment(result.body)
    elif prefer == "OperationOutcome":
        response["outcome"] = outcome([Issue("informational", "ok", severity="information")])
    entry["response"] = response
    return entry


def _read_entry(base: str, result: ReadResult) -> dict[str, Any]:
    if result.error is not None:
        return {"response": {"status": status_line(status_of(result.error)), "outcome": outcome_of(result.error)}}
    if result.search is not None:
        return {"resource": searchset(base, result.search, ""), "response": {"status": "200 OK"}}
    res = result.resource
    assert res is not None and res.body is not None
    return {
        "fullUrl": f"{base}/{res.resource_type}/{res.id}",
        "resource": orjson.Fragment(res.body),
        "response": {"status": "200 OK", "etag": etag(res.version), "lastModified": instant(res.last_updated_us)},
    }


def bundle_response(base: str, result: Outcome, prefer: str) -> bytes:
    entries: dict[int, dict[str, Any]] = {}
    for write in result.writes:
        entries[write.index] = _write_entry(base, write, prefer)
    for read in result.reads:
        entries[read.index] = _read_entry(base, read)
    doc = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": f"{result.bundle_type}-response",
        "entry": [entries[i] for i in sorted(entries)],
    }
    return orjson.dumps(doc)


def searchset(base: str, result: SearchResult, path: str) -> dict[str, Any]:
    def link(relation: str, offset: int) -> dict[str, str]:
        params = [*result.used, ("_count", str(result.count)), ("_offset", str(offset))]
        return {"relation": relation, "url": f"{base}/{path}?{urlencode(params)}"}

    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base}/{r.resource_type}/{r.id}",
            "resource": orjson.Fragment(r.body),
            "search": {"mode": "match"},
        }
        for r in result.resources
        if r.body is not None
    ]
    entries += [
        {
            "fullUrl": f"{base}/{r.resource_type}/{r.id}",
            "resource": orjson.Fragment(r.body),
            "search": {"mode": "include"},
        }
        for r in result.included
        if r.body is not None
    ]
    if result.ignored:
        issues = [
            Issue("not-supported", f"search parameter '{n}' is not supported and was ignored", severity="warning")
            for n in result.ignored
        ]
        entries.append({"resource": outcome(issues), "search": {"mode": "outcome"}})
    links = [link("self", result.offset)]
    if result.summary_count:
        links = [{"relation": "self", "url": f"{base}/{path}?{urlencode([*result.used])}"}]
    elif result.count and result.offset + result.count < result.total:
        links.append(link("next", result.offset + result.count))
    if result.count and result.offset > 0:
        links.append(link("previous", max(0, result.offset - result.count)))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "total": result.total,
        "link": links if path else [],
        "entry": entries,
    }


def page_bundle(base: str, page: Page, path: str, bundle_type: str) -> dict[str, Any]:
    """A ``searchset`` ($everything) or ``history`` Bundle of one page, with paging links."""

    def link(relation: str, offset: int) -> dict[str, str]:
        params = [*page.used, ("_count", str(page.count)), ("_offset", str(offset))]
        return {"relation": relation, "url": f"{base}/{path}?{urlencode(params)}"}

    links = [link("self", page.offset)]
    if page.count and page.offset + page.count < page.total:
        links.append(link("next", page.offset + page.count))
    if page.count and page.offset > 0:
        links.append(link("previous", max(0, page.offset - page.count)))
    entries = [_history_entry(base, r) if bundle_type == "history" else _match_entry(base, r) for r in page.resources]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": bundle_type,
        "total": page.total,
        "link": links,
        "entry": entries,
    }


def _match_entry(base: str, res: StoredResource) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{res.resource_type}/{res.id}",
        "resource": orjson.Fragment(res.body or b"{}"),
        "search": {"mode": "match"},
    }


def _history_entry(base: str, res: StoredResource) -> dict[str, Any]:
    ref = f"{res.resource_type}/{res.id}"
    method = "DELETE" if res.deleted else "POST" if res.version == 1 else "PUT"
    entry: dict[str, Any] = {
        "fullUrl": f"{base}/{ref}",
        "request": {"method": method, "url": res.resource_type if method == "POST" else ref},
        "response": {
            "status": "204 No Content" if res.deleted else "201 Created" if res.version == 1 else "200 OK",
            "etag": etag(res.version),
            "lastModified": instant(res.last_updated_us),
        },
    }
    if res.body is not None and not res.deleted:
        entry["resource"] = orjson.Fragment(res.body)
    return entry
