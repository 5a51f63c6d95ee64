"""``Patient/{id}/$everything`` and ``_history`` (instance and type).

Both read the journal's index for *which* versions to return and load bodies
through ``ResourceReads`` (hot from the journal, cold from the lake), so the
same decryption, erasure (410) and masking rules apply as for a read. Only
what the caller may see is counted and returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingest.access import Access
from ingest.errors import ForbiddenError, InvalidInputError, Issue, ResourceNotFoundError
from ingest.fhir_types import is_supported
from ingest.journal import VERSION_COLUMNS
from ingest.search import instant_range
from security.authz import Decision

if TYPE_CHECKING:
    from ingest.reads import ResourceReads, StoredResource

_EVERYTHING_PARAMS = frozenset({"_since", "_type", "_count", "_offset", "_format", "_pretty"})
_HISTORY_PARAMS = frozenset({"_since", "_count", "_offset", "_format", "_pretty"})


@dataclass(slots=True)
class Page:
    resources: list[StoredResource]
    total: int
    offset: int
    count: int
    used: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Paging:
    count: int
    offset: int
    since_us: int | None
    types: tuple[str, ...]
    used: list[tuple[str, str]]


def _paging(params: list[tuple[str, str]], allowed: frozenset[str], max_count: int) -> _Paging:
    count, offset, since = min(50, max_count), 0, None
    types: tuple[str, ...] = ()
    used: list[tuple[str, str]] = []
    for name, value in params:
        if name not in allowed:
            raise InvalidInputError(
                "unsupported parameter", [Issue("not-supported", f"parameter '{name}' is not supported here", (name,))]
            )
        if name in ("_count", "_offset"):
            if not value.isdigit():
                raise InvalidInputError("invalid parameter", [Issue("invalid", f"{name} must be an integer", (name,))])
            count, offset = (min(int(value), max_count), offset) if name == "_count" else (count, int(value))
        elif name == "_since":
            since = instant_range(value)[0]
            used.append((name, value))
        elif name == "_type":
            types = tuple(t for t in value.split(",") if t)
            if not all(is_supported(t) for t in types):
                raise InvalidInputError("invalid parameter", [Issue("invalid", "_type names an unknown type", (name,))])
            used.append((name, value))
    return _Paging(count, offset, since, types, used)


def everything(
    reads: ResourceReads, rid: str, params: list[tuple[str, str]], *, max_count: int, access: Access | None
) -> Page:
    """The patient and every resource of the patient's compartment the caller may see, Patient first.

    Raises ResourceNotFoundError (also for a patient the caller may not see), InvalidInputError.
    """
    paging = _paging(params, _EVERYTHING_PARAMS, max_count)
    cur = reads.journal.current("Patient", rid)
    if cur is None or cur.deleted:
        raise ResourceNotFoundError("Patient resource not found")
    if access is not None:
        access.require("read", "Patient", rid, cur.patient_key)
    conn = reads.journal.reader()
    sql = "SELECT rtype, id FROM current WHERE patient_key=? AND deleted=0"
    args: list[object] = [cur.patient_key]
    if paging.since_us is not None:
        sql += " AND last_updated >= ?"
        args.append(paging.since_us)
    by_type: dict[str, set[str]] = {}
    for rtype, cid in conn.execute(sql, args).fetchall():
        if not paging.types or rtype in paging.types:
            by_type.setdefault(str(rtype), set()).add(str(cid))
    visible: list[tuple[str, str]] = []
    decisions: dict[str, Decision | None] = {}
    for rtype in sorted(by_type, key=lambda t: (t != "Patient", t)):
        ids = _visible(reads, rtype, by_type[rtype], access, decisions)
        visible += [(rtype, i) for i in sorted(ids)]
    page = visible[paging.offset : paging.offset + paging.count]
    resources: list[StoredResource] = []
    for rtype in dict.fromkeys(t for t, _ in page):
        wanted = [i for t, i in page if t == rtype]
        resources += reads.present(rtype, wanted, access, decisions.get(rtype))
    return Page(resources, len(visible), paging.offset, paging.count, paging.used)


def _visible(
    reads: ResourceReads, rtype: str, ids: set[str], access: Access | None, decisions: dict[str, Decision | None]
) -> set[str]:
    if access is None:
        decisions[rtype] = None
        return ids
    before = access.denied
    try:
        decision = access.require_type("read", rtype)
    except ForbiddenError:
        access.denied = before  # a type the caller may not read is left out, not refused
        return set()
    decisions[rtype] = decision
    clause, args = access.visibility(rtype, decision)
    return reads.visible_ids(rtype, ids, f"c.rtype=? AND c.deleted=0 AND {clause}", args)


def history(
    reads: ResourceReads,
    rtype: str,
    rid: str | None,
    params: list[tuple[str, str]],
    *,
    max_count: int,
    access: Access | None,
) -> Page:
    """Versions of one resource (``rid``) or of a whole type, newest first; deleted versions included.

    Raises ResourceNotFoundError, ForbiddenError, InvalidInputError.
    """
    paging = _paging(params, _HISTORY_PARAMS, max_count)
    decision = access.require_type("read", rtype) if access is not None else None
    where, args = "v.rtype=?", list[object]([rtype])
    if rid is not None:
        cur = reads.journal.current(rtype, rid)
        if cur is None:
            raise ResourceNotFoundError(f"{rtype} resource not found")
        if access is not None:
            decision = access.require("read", rtype, rid, cur.patient_key)
        where, args = where + " AND v.id=?", [*args, rid]
    elif access is not None and decision is not None:
        clause, extra = access.visibility(rtype, decision)
        where, args = f"{where} AND {clause}", [*args, *extra]
    if paging.since_us is not None:
        where, args = where + " AND v.last_updated >= ?", [*args, paging.since_us]
    conn = reads.journal.reader()
    base = "FROM versions v JOIN current c ON c.rtype=v.rtype AND c.id=v.id"
    total = int(conn.execute(f"SELECT COUNT(*) {base} WHERE {where}", args).fetchone()[0])
    columns = ", ".join(f"v.{c.strip()}" for c in VERSION_COLUMNS.split(","))
    rows = conn.execute(
        f"SELECT {columns} {base} WHERE {where} ORDER BY v.last_updated DESC, v.id, v.version DESC LIMIT ? OFFSET ?",
        [*args, paging.count, paging.offset],
    ).fetchall()
    resources = reads.load_versions(rtype, rows, access, decision)
    return Page(resources, total, paging.offset, paging.count, paging.used)
