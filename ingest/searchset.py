"""One search request: criteria, visibility, sorting, paging, ``_include`` / ``_revinclude``, summaries.

Criteria narrow the candidates through the index (``ingest/search.py``); the
caller's visibility is applied in SQL before anything is counted, so totals
never reveal what the caller may not see. Included resources pass the same
visibility filter; one the caller may not see is left out, like a missing one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from ingest.access import Access
from ingest.errors import ForbiddenError, InvalidInputError, Issue
from ingest.search import PHI_PARAMS, CriteriaMatcher, UnsupportedParameter, parse_criterion
from ingest.search_index import walk
from ingest.search_params import INCLUDES
from security.authz import Decision

if TYPE_CHECKING:
    from ingest.reads import ResourceReads, SearchResult, StoredResource

_CONTROL = frozenset({"_format", "_pretty", "_total"})
_SORTS = {"_id": "c.id", "_lastUpdated": "c.last_updated"}
_MAX_INCLUDED = 1000
_MANDATORY = ("resourceType", "id", "meta")


def run_search(
    reads: ResourceReads,
    rtype: str,
    params: list[tuple[str, str]],
    *,
    strict: bool,
    max_count: int,
    access: Access | None,
) -> SearchResult:
    """Answer ``GET [base]/{rtype}?params``; raises InvalidInputError, ForbiddenError."""
    from ingest.reads import PATIENT_TYPES, SearchResult

    matcher = CriteriaMatcher(reads.journal, reads.pseudo, PATIENT_TYPES)
    decision = access.require_type("search", rtype) if access is not None else None
    opts = _Options(max_count)
    ids: set[str] | None = None
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, value in params:
        if opts.take(name, value, rtype):
            used += [(name, value)] if name in ("_sort", "_include", "_revinclude", "_elements", "_summary") else []
            continue
        crit = parse_criterion(name, value)
        if decision is not None and decision.masked and crit.name in PHI_PARAMS:
            if access is not None:
                access.denied = True
            raise ForbiddenError(
                "forbidden", [Issue("forbidden", f"de-identified access cannot search by '{crit.name}'", (name,))]
            )
        try:
            found = matcher.match(rtype, crit)
        except UnsupportedParameter:
            if strict:
                raise InvalidInputError(
                    "unsupported search parameter",
                    [Issue("not-supported", f"search parameter '{name}' is not supported", (name,))],
                ) from None
            ignored.append(name)
            continue
        ids = found if ids is None else ids & found
        used.append((name, value))
    total, page = _page(reads, rtype, ids, opts, access, decision)
    if opts.summary_count:
        return SearchResult([], total, opts.offset, 0, used, ignored, summary_count=True)
    resources = _in_order(reads.present(rtype, page, access, decision), page)
    included = _includes(reads, rtype, resources, opts, access)
    if opts.elements:
        resources = [_subset(r, opts.elements) for r in resources]
    return SearchResult(resources, total, opts.offset, opts.count, used, ignored, included)


class _Options:
    def __init__(self, max_count: int) -> None:
        self.max_count = max_count
        self.count, self.offset = min(50, max_count), 0
        self.sort: list[tuple[str, bool]] = []
        self.includes: list[tuple[str, str, str | None]] = []
        self.revincludes: list[tuple[str, str, str | None]] = []
        self.elements: list[str] = []
        self.summary_count = False

    def take(self, name: str, value: str, rtype: str) -> bool:
        """Consume a result parameter; False for a search criterion."""
        if name == "_count":
            self.count = _int_param(name, value, 0, self.max_count)
        elif name == "_offset":
            self.offset = _int_param(name, value, 0, 10**9)
        elif name == "_sort":
            self.sort = [_sort_key(item) for item in value.split(",") if item]
        elif name == "_summary":
            if value not in ("count", "false"):
                raise _unsupported(name, "only _summary=count is supported")
            self.summary_count = value == "count"
        elif name == "_elements":
            self.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name in ("_include", "_revinclude"):
            (self.includes if name == "_include" else self.revincludes).append(_include_spec(name, value, rtype))
        else:
            return name in _CONTROL
        return True


def _sort_key(item: str) -> tuple[str, bool]:
    name = item.removeprefix("-")
    if name not in _SORTS:
        raise _unsupported("_sort", f"sorting by '{name}' is not supported (use _id or _lastUpdated)")
    return name, item.startswith("-")


def _include_spec(name: str, value: str, rtype: str) -> tuple[str, str, str | None]:
    parts = value.split(":")
    if len(parts) not in (2, 3) or (parts[0], parts[1]) not in INCLUDES:
        raise _unsupported(name, f"{name}={value} is not supported")
    if name == "_include" and parts[0] != rtype:
        raise _unsupported(name, f"{name} must start with the searched type {rtype}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _unsupported(name: str, why: str) -> InvalidInputError:
    return InvalidInputError("unsupported search parameter", [Issue("not-supported", why, (name,))])


def _int_param(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit():
        raise InvalidInputError(
            "invalid parameter", [Issue("invalid", f"{name} must be a non-negative integer", (name,))]
        )
    return max(low, min(int(value), high))


def _page(
    reads: ResourceReads,
    rtype: str,
    ids: set[str] | None,
    opts: _Options,
    access: Access | None,
    decision: Decision | None,
) -> tuple[int, list[str]]:
    """The number of visible matches and the ids of the requested page, in the requested order."""
    visible, vis_params = ("1=1", []) if access is None or decision is None else access.visibility(rtype, decision)
    keys = [*opts.sort, ("_id", False)]
    where = f"c.rtype=? AND c.deleted=0 AND {visible}"
    conn = reads.journal.reader()
    if ids is None:  # no criteria: count and page in SQL instead of loading every id of the type
        total = int(conn.execute(f"SELECT COUNT(*) FROM current c WHERE {where}", (rtype, *vis_params)).fetchone()[0])  # noqa: S608
        if opts.summary_count:
            return total, []
        order = ", ".join(f"{_SORTS[n]} {'DESC' if desc else 'ASC'}" for n, desc in keys)
        sql = f"SELECT c.id FROM current c WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"  # noqa: S608
        rows = conn.execute(sql, (rtype, *vis_params, opts.count, opts.offset)).fetchall()
        return total, [str(r[0]) for r in rows]
    wanted = sorted(ids)
    keyed: list[tuple[Any, ...]] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        sql = f"SELECT c.id, c.last_updated FROM current c WHERE {where} AND c.id IN ({','.join('?' * len(chunk))})"  # noqa: S608
        keyed += conn.execute(sql, (rtype, *vis_params, *chunk)).fetchall()
    for name, desc in reversed(keys):  # stable sorts, least significant first
        column = 0 if name == "_id" else 1
        keyed.sort(key=lambda row: row[column], reverse=desc)
    return len(keyed), [str(row[0]) for row in keyed[opts.offset : opts.offset + opts.count]]


def _in_order(rows: list[StoredResource], ids: list[str]) -> list[StoredResource]:
    position = {rid: i for i, rid in enumerate(ids)}
    return sorted(rows, key=lambda r: position.get(r.id, 0))


def _includes(
    reads: ResourceReads, rtype: str, page: list[StoredResource], opts: _Options, access: Access | None
) -> list[StoredResource]:
    if not page or not (opts.includes or opts.revincludes):
        return []
    wanted: dict[str, set[str]] = {}
    for _source, param, target in opts.includes:
        path = INCLUDES[(rtype, param)]
        for res in page:
            for ref in walk(orjson.loads(res.body or b"{}"), path):
                kind, rid = _target(ref)
                if kind and (target is None or kind == target):
                    wanted.setdefault(kind, set()).add(rid)
    matcher = CriteriaMatcher(reads.journal, reads.pseudo, frozenset())
    for source, param, _target_type in opts.revincludes:
        refs = ",".join(f"{rtype}/{r.id}" for r in page)
        if param in ("patient", "subject") and rtype == "Patient":
            from ingest.reads import PATIENT_TYPES

            found = CriteriaMatcher(reads.journal, reads.pseudo, PATIENT_TYPES).match(
                source, parse_criterion(param, refs)
            )
        else:
            found = matcher.match(source, parse_criterion(param, refs)) if (source, param) in INCLUDES else set()
        wanted.setdefault(source, set()).update(found)
    out: list[StoredResource] = []
    seen = {(r.resource_type, r.id) for r in page}
    for kind, rids in sorted(wanted.items()):
        fresh = sorted(rid for rid in rids if (kind, rid) not in seen)
        out += _visible_resources(reads, kind, fresh[: _MAX_INCLUDED - len(out)], access)
    return out


def _target(ref: Any) -> tuple[str | None, str]:
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str) or "?" in target:
        return None, ""
    parts = target.split("/_history/", 1)[0].split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else (None, "")


def _visible_resources(reads: ResourceReads, rtype: str, ids: list[str], access: Access | None) -> list[StoredResource]:
    if not ids:
        return []
    if access is None:
        return reads.present(rtype, ids, None, None)
    before = access.denied
    try:
        decision = access.require_type("read", rtype)
    except ForbiddenError:
        access.denied = before  # leaving an include out does not deny the request
        return []
    where = f"c.rtype=? AND c.deleted=0 AND {access.visibility(rtype, decision)[0]}"
    visible = reads.visible_ids(rtype, set(ids), where, access.visibility(rtype, decision)[1])
    return reads.present(rtype, sorted(visible), access, decision)


def _subset(res: StoredResource, elements: list[str]) -> StoredResource:
    """``_elements``: the named top-level elements plus the mandatory ones, tagged SUBSETTED."""
    if res.body is None:
        return res
    doc = orjson.loads(res.body)
    kept = {k: v for k, v in doc.items() if k in _MANDATORY or k in elements}
    meta = dict(kept.get("meta") or {})
    tag = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
    meta["tag"] = [*(meta.get("tag") or []), tag]
    kept["meta"] = meta
    return replace(res, body=orjson.dumps(kept))
