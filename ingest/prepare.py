"""Turn a request body into prepared entries: parse, check, validate, rewrite.

Runs inside the validation worker processes (see ``ingest.validation``): this
is the CPU-heavy half of ingestion, done once per resource. It never touches
storage; everything that needs the current state of the server (versions,
conditional matches) happens afterwards in ``ingest.transaction``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import ValidationError

from ingest.bindings import binding_violations
from ingest.errors import (
    IngestError,
    InvalidInputError,
    Issue,
    NotSupportedError,
    PayloadTooLargeError,
    entry_issue,
)
from ingest.extract import (
    access_refs,
    categories,
    extract_columns,
    identifiers,
    patient_reference,
    phi_fields,
    search_values,
)
from ingest.fhir_types import R4_RESOURCE_TYPES, is_supported, model_class
from ingest.prepared import Limits, PreparedBundle, PreparedEntry
from ingest.search_index import index_keys

_BOM = b"\xef\xbb\xbf"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
_MAX_ISSUES = 100

# Placeholders for meta.versionId / meta.lastUpdated, filled in once the
# transaction is ordered; random per process so no payload can contain them.
_VERSION_TOKEN = f"v-{uuid.uuid4().hex}"
_UPDATED_TOKEN = f"t-{uuid.uuid4().hex}"


def parse_json(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object, tolerating a UTF-8 byte-order mark."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson < 3.11 says "recursion limit reached", later versions "depth limit exceeded".
        if any(word in exc.msg.lower() for word in ("recursion", "depth")):
            raise PayloadTooLargeError("The document is nested too deeply") from None
        message = f"The body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        raise InvalidInputError(message, [Issue("structure", message)]) from None
    if not isinstance(doc, dict):
        raise InvalidInputError(
            "The body must be a JSON object", [Issue("structure", "The body must be a JSON object")]
        )
    return doc


def prepare_request(raw: bytes, limits: Limits) -> PreparedBundle:
    """Prepare a ``POST [base]`` body: a transaction or batch Bundle."""
    doc = parse_json(raw)
    if doc.get("resourceType") != "Bundle":
        raise InvalidInputError(
            "POST to the base URL takes a Bundle", [Issue("invalid", "resourceType must be Bundle", ("Bundle",))]
        )
    bundle_type = doc.get("type")
    if bundle_type is None:
        raise InvalidInputError(
            "Bundle.type is required", [Issue("required", "Bundle.type is required", ("Bundle.type",))]
        )
    if bundle_type not in ("transaction", "batch"):
        raise InvalidInputError(
            "Bundle.type must be transaction or batch",
            [Issue("not-supported", "Bundle.type must be transaction or batch", ("Bundle.type",))],
        )
    entries = doc.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidInputError(
            "Bundle.entry must be an array", [Issue("structure", "must be an array", ("Bundle.entry",))]
        )
    if len(entries) > limits.max_entries:
        raise PayloadTooLargeError(f"The bundle has more than {limits.max_entries} entries")
    return _prepare_entries(entries, bundle_type, _bundle_identifier(doc), limits, single=False)


def prepare_interaction(
    raw: bytes | None, method: str, resource_type: str, resource_id: str | None, query: str | None, limits: Limits
) -> PreparedBundle:
    """Prepare a plain REST create / update / delete as a one-entry transaction."""
    entry: dict[str, Any] = {"request": {"method": method, "url": _url(resource_type, resource_id, query)}}
    if raw is not None:
        entry["resource"] = parse_json(raw)
    return _prepare_entries([entry], "transaction", None, limits, single=True)


def _url(resource_type: str, resource_id: str | None, query: str | None) -> str:
    url = resource_type + (f"/{resource_id}" if resource_id else "")
    return url + (f"?{query}" if query else "")


def _bundle_identifier(doc: dict[str, Any]) -> tuple[str, str] | None:
    ident = doc.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        return str(ident.get("system") or ""), ident["value"]
    return None


def _prepare_entries(
    entries: list[Any], bundle_type: str, ident: tuple[str, str] | None, limits: Limits, *, single: bool
) -> PreparedBundle:
    atomic = bundle_type == "transaction"
    prepared: list[PreparedEntry] = []
    resources: dict[int, dict[str, Any]] = {}  # stay in this process; only bodies cross back
    issues: list[Issue] = []
    for index, raw_entry in enumerate(entries):
        at = None if single else index
        try:
            entry, resource = _read_request(index, at, raw_entry)
            prepared.append(entry)
            if resource is not None:
                resources[index] = resource
        except IngestError as exc:
            if not atomic and not isinstance(exc, PayloadTooLargeError):
                prepared.append(PreparedEntry(index=index, method="?", resource_type="?", error=exc))
                continue
            if isinstance(exc, PayloadTooLargeError):
                raise
            issues.extend(exc.issues)
    if issues:
        raise InvalidInputError("The transaction is invalid", issues[:_MAX_ISSUES])
    _check_uniqueness(prepared, single)
    urls = _full_url_map(prepared) if atomic else {}
    count = 0
    for entry in prepared:
        resource = resources.pop(entry.index, None)
        if entry.error is not None or resource is None:
            continue
        try:
            _finish_entry(entry, resource, urls, limits, None if single else entry.index, atomic)
            count += 1
        except IngestError as exc:
            if isinstance(exc, PayloadTooLargeError):
                raise
            if atomic:
                issues.extend(exc.issues)
            else:
                entry.error, entry.body = exc, None
    if issues:
        raise InvalidInputError("The transaction is invalid", issues[:_MAX_ISSUES])
    return PreparedBundle(
        bundle_type=bundle_type,
        entries=prepared,
        identifier=ident,
        version_token=_VERSION_TOKEN.encode(),
        updated_token=_UPDATED_TOKEN.encode(),
        single=single,
        resource_count=count,
    )


def _read_request(index: int, at: int | None, raw_entry: Any) -> tuple[PreparedEntry, dict[str, Any] | None]:
    if not isinstance(raw_entry, dict):
        raise InvalidInputError(
            "entry must be an object", [entry_issue(at, "", "structure", "entry must be an object")]
        )
    request = raw_entry.get("request")
    if not isinstance(request, dict):
        raise InvalidInputError(
            "entry.request is required", [entry_issue(at, "request", "required", "request is required")]
        )
    method = request.get("method")
    if method not in _METHODS:
        code = "not-supported" if method in ("PATCH", "HEAD") else "invalid"
        raise InvalidInputError(
            "unsupported method", [entry_issue(at, "request.method", code, "method must be GET, POST, PUT or DELETE")]
        )
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(
            "entry.request.url is required", [entry_issue(at, "request.url", "required", "url is required")]
        )
    entry = _parse_url(index, at, method, url.strip().lstrip("/"))
    full_url = raw_entry.get("fullUrl")
    entry.full_url = full_url if isinstance(full_url, str) else None
    if method in ("POST", "PUT"):
        resource = raw_entry.get("resource")
        if not isinstance(resource, dict):
            raise InvalidInputError(
                "entry.resource is required", [entry_issue(at, "resource", "required", f"{method} needs a resource")]
            )
        _check_resource_type(at, resource, entry)
        if method == "POST" or entry.conditional is not None:
            entry.resource_id = str(uuid.uuid4())  # tentative; may resolve to an existing resource
            cond = request.get("ifNoneExist")
            if isinstance(cond, str) and cond:
                entry.conditional = strip_type(cond, entry.resource_type)
        if_match = request.get("ifMatch")
        if if_match is not None:
            entry.if_match = parse_etag(if_match, at)
        return entry, resource
    if method == "DELETE":
        if_match = request.get("ifMatch")
        if if_match is not None:
            entry.if_match = parse_etag(if_match, at)
    return entry, None


def _dump(resource: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(resource)
    except orjson.JSONEncodeError:  # orjson refuses to serialize past its own depth limit (255)
        raise PayloadTooLargeError("The document is nested too deeply") from None


def _parse_url(index: int, at: int | None, method: str, url: str) -> PreparedEntry:
    path, _, query = url.partition("?")
    parts = path.split("/")
    rtype = parts[0]
    if rtype.startswith("$") or any(p.startswith("$") for p in parts):
        raise NotSupportedError(
            "operation not supported", [entry_issue(at, "request.url", "not-supported", "operations are not supported")]
        )
    if not _TYPE.match(rtype) or rtype not in R4_RESOURCE_TYPES:
        raise InvalidInputError(
            "unknown resource type", [entry_issue(at, "request.url", "not-supported", "unknown resource type in url")]
        )
    if not is_supported(rtype):
        raise NotSupportedError(
            "resource type not supported",
            [entry_issue(at, "request.url", "not-supported", f"{rtype} is not stored by this server")],
        )
    entry = PreparedEntry(index=index, method=method, resource_type=rtype)
    if len(parts) == 1:
        if method == "POST" and not query:
            return entry
        if method in ("PUT", "DELETE") and query:
            entry.conditional = query
            return entry
        if method == "GET":
            entry.query = query
            return entry
    elif len(parts) in (2, 4) and not query and _ID.match(parts[1]):
        entry.resource_id = parts[1]
        if len(parts) == 2 and method in ("PUT", "DELETE", "GET"):
            return entry
        if len(parts) == 4 and method == "GET" and parts[2] == "_history" and parts[3].isdigit():
            entry.version_id = int(parts[3])
            return entry
    raise InvalidInputError(
        "invalid request url", [entry_issue(at, "request.url", "invalid", f"url is not valid for {method}")]
    )


def _check_resource_type(at: int | None, resource: dict[str, Any], entry: PreparedEntry) -> None:
    rtype = resource.get("resourceType")
    where = f"{_base(at, entry.resource_type)}.resourceType"
    if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
        raise InvalidInputError(
            "unknown resourceType",
            [entry_issue(at, where, "invalid", "resourceType is missing or not an R4 resource type")],
        )
    if rtype != entry.resource_type:
        raise InvalidInputError(
            "resourceType mismatch", [entry_issue(at, where, "invalid", "resourceType does not match the request url")]
        )


def parse_etag(value: object, at: int | None = None) -> int:
    """The version number in an ETag such as ``W/"3"``."""
    text = str(value).strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidInputError(
            "invalid ETag", [entry_issue(at, "request.ifMatch", "invalid", 'ETag must look like W/"<version>"')]
        )
    return int(text)


def strip_type(query: str, rtype: str) -> str:
    query = query.lstrip("/")
    prefix = f"{rtype}?"
    return query[len(prefix) :] if query.startswith(prefix) else query


def _check_uniqueness(entries: list[PreparedEntry], single: bool) -> None:
    seen_urls: set[str] = set()
    seen_targets: set[tuple[str, str]] = set()
    issues = []
    for entry in entries:
        if entry.error is not None:
            continue
        at = None if single else entry.index
        if entry.full_url is not None and entry.method != "GET":
            if entry.full_url in seen_urls:
                issues.append(entry_issue(at, "fullUrl", "duplicate", "fullUrl is used by an earlier entry"))
            seen_urls.add(entry.full_url)
        if entry.method in ("PUT", "DELETE"):
            target = (entry.resource_type, f"?{entry.conditional}" if entry.conditional else str(entry.resource_id))
            if target in seen_targets:
                issues.append(
                    entry_issue(at, "request.url", "duplicate", "the same resource is changed by an earlier entry")
                )
            seen_targets.add(target)
    if issues:
        raise InvalidInputError("The bundle is invalid", issues[:_MAX_ISSUES])


def _full_url_map(entries: list[PreparedEntry]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for entry in entries:
        if entry.full_url and entry.method in ("POST", "PUT") and entry.resource_id:
            target = f"{entry.resource_type}/{entry.resource_id}"
            urls[entry.full_url] = target
            tail = "/".join(entry.full_url.rsplit("/", 2)[-2:])
            if entry.method == "POST" and entry.full_url.startswith("http") and tail not in urls:
                urls[tail] = target  # relative references resolve against the entry's base
    return urls


def _finish_entry(
    entry: PreparedEntry, resource: dict[str, Any], urls: dict[str, str], limits: Limits, at: int | None, atomic: bool
) -> None:
    refs, links = _scan(resource, limits.max_depth, urls)
    for node, key in links:  # uri/url elements naming an entry (e.g. Attachment.url -> Binary)
        node[key] = urls[node[key]] if node[key] in urls else _narrative_links(node[key], urls)
    _validate(resource, at)
    if entry.method == "PUT":
        _check_body_id(entry, resource.get("id"), at)
    cond_refs = _rewrite_references(resource, refs, urls, at, atomic)
    given = resource.get("meta")
    kept = {k: v for k, v in given.items() if k not in ("versionId", "lastUpdated")} if isinstance(given, dict) else {}
    meta = {"versionId": _VERSION_TOKEN, "lastUpdated": _UPDATED_TOKEN, **kept}
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    out = {"resourceType": entry.resource_type, "id": entry.resource_id, "meta": meta, **rest}
    entry.body = _dump(out)
    entry.cond_refs = cond_refs
    entry.patient_id = patient_reference(out)
    entry.columns = extract_columns(out)
    entry.identifiers = identifiers(out)
    entry.search = search_values(out) + index_keys(out)
    entry.phi = phi_fields(out)
    entry.access = access_refs(out)
    entry.category = categories(out)


def _check_body_id(entry: PreparedEntry, body_id: object, at: int | None) -> None:
    """An update's body carries the id of its url (FHIR R4 3.1.0.4: otherwise 400)."""
    where = f"{_base(at, entry.resource_type)}.id"
    if body_id is None and entry.conditional is None:
        raise InvalidInputError("id missing", [entry_issue(at, where, "required", "an update needs the resource id")])
    if entry.conditional is not None:
        entry.body_id = body_id if isinstance(body_id, str) else None  # checked against the match when applied
        return
    if body_id is not None and body_id != entry.resource_id:
        raise InvalidInputError(
            "id mismatch", [entry_issue(at, where, "invalid", "resource id does not match the url")]
        )


def _base(at: int | None, rtype: str) -> str:
    """Where element paths start: the entry's resource in a Bundle, else the resource type."""
    return "resource" if at is not None else rtype


def _scan(
    resource: dict[str, Any], max_depth: int, urls: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[tuple[Any, Any]]]:
    """Check nesting depth; collect objects carrying a ``reference`` string and, when ``urls``
    is given, the (container, key) of other string values equal to an entry's fullUrl.

    FHIR R4 transaction processing updates such uri/url links too (e.g. ``Attachment.url``
    naming a Binary created in the same bundle).
    """
    refs: list[dict[str, Any]] = []
    links: list[tuple[Any, Any]] = []
    divs: list[tuple[Any, Any]] = []
    stack: list[tuple[Any, int]] = [(resource, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise PayloadTooLargeError(f"The document is nested deeper than {max_depth} levels")
        children: Iterable[tuple[Any, Any]]
        if node.__class__ is dict:
            if node.get("reference").__class__ is str:
                refs.append(node)
            children = node.items()
        else:
            children = enumerate(node)
        for key, child in children:
            if child.__class__ is dict or child.__class__ is list:
                stack.append((child, depth + 1))
            elif urls and child.__class__ is str and key != "reference":
                if child in urls:
                    links.append((node, key))
                elif key == "div":
                    divs.append((node, key))
    if urls:
        links += [(node, key) for node, key in divs if _narrative_links(node[key], urls) != node[key]]
    return refs, links


def _narrative_links(div: str, urls: dict[str, str]) -> str:
    """Narrative ``href`` / ``src`` attributes that name an entry's fullUrl, pointed at its new id."""
    for url, target in urls.items():
        if url in div:
            for attribute in ("href", "src"):
                div = div.replace(f'{attribute}="{url}"', f'{attribute}="{target}"')
    return div


def _validate(resource: dict[str, Any], at: int | None) -> None:
    model = model_class(resource["resourceType"])
    base = _base(at, resource["resourceType"])
    issues = _contained_issues(resource, base, at)
    if issues:  # the models fail with a KeyError on an unknown contained type
        raise InvalidInputError("The resource is invalid", issues[:_MAX_ISSUES])
    try:
        model.model_validate(resource)  # type: ignore[union-attr]
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            path = _loc_path(err["loc"])
            issues.append(entry_issue(at, f"{base}.{path}" if path else base, _issue_code(err["type"]), err["msg"]))
    except (ValueError, TypeError, LookupError, RecursionError):
        issues.append(entry_issue(at, base, "structure", "the resource could not be validated"))
    for element, reason in binding_violations(resource):
        issues.append(entry_issue(at, f"{base}.{element}", "code-invalid", reason))
    if issues:
        raise InvalidInputError("The resource is invalid", issues[:_MAX_ISSUES])


def _contained_issues(resource: dict[str, Any], base: str, at: int | None) -> list[Issue]:
    contained = resource.get("contained")
    if not isinstance(contained, list):
        return []
    return [
        entry_issue(at, f"{base}.contained[{i}].resourceType", "invalid", "resourceType is missing or not supported")
        for i, item in enumerate(contained)
        if isinstance(item, dict) and not _known_type(item.get("resourceType"))
    ]


def _known_type(rtype: object) -> bool:
    return isinstance(rtype, str) and rtype in R4_RESOURCE_TYPES and model_class(rtype) is not None


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-") and part != "__root__":
            out += ("." if out else "") + str(part)
    return out


def _issue_code(pydantic_type: str) -> str:
    if pydantic_type in ("missing", "model_field_validation.missing"):  # the latter: fhir.resources
        return "required"
    if pydantic_type == "extra_forbidden":
        return "structure"
    return "value"


def _rewrite_references(
    resource: dict[str, Any], refs: list[dict[str, Any]], urls: dict[str, str], at: int | None, atomic: bool
) -> tuple[str, ...]:
    cond: list[str] = []
    for node in refs:
        ref = node["reference"]
        target = urls.get(ref)
        if target is not None:
            node["reference"] = target
        elif ref.startswith(("urn:uuid:", "urn:oid:")):
            why = (
                "reference does not resolve to an entry of this transaction"
                if atomic
                else "batch entries cannot reference other entries"
            )
            path = _path_to(resource, node) or "reference"
            base = _base(at, resource["resourceType"])
            raise InvalidInputError(
                "unresolved reference", [entry_issue(at, f"{base}.{path}.reference", "not-found", why)]
            )
        elif "?" in ref and _TYPE.match(ref.split("?", 1)[0]):
            if not atomic:
                raise NotSupportedError(
                    "conditional reference",
                    [entry_issue(at, "resource", "not-supported", "conditional references need a transaction")],
                )
            cond.append(ref)
    return tuple(dict.fromkeys(cond))


def reference_element(body: bytes, resource_type: str, reference: str, at: int | None) -> str:
    """Where ``reference`` occurs in a prepared body, e.g. ``resource.subject.reference`` (for error messages)."""
    resource = orjson.loads(body)
    node = next((n for n in _scan(resource, 10**6)[0] if n["reference"] == reference), None)
    path = None if node is None else _path_to(resource, node)
    base = _base(at, resource_type)
    return f"{base}.{path}.reference" if path else base


def _path_to(node: Any, target: dict[str, Any], prefix: str = "") -> str | None:
    """FHIRPath-like location of ``target`` inside ``node`` (only computed for error messages)."""
    if node is target:
        return prefix
    if isinstance(node, dict):
        for key, child in node.items():
            found = _path_to(child, target, f"{prefix}.{key}" if prefix else key)
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found = _path_to(child, target, f"{prefix}[{i}]")
            if found is not None:
                return found
    return None
