"""As-of reads (``_asOf=<instant>``): a record as it stood at an instant, from the Iceberg snapshot of then.

The snapshot current at the instant supplies the versions and bodies. A write
acknowledged before the instant may have reached the lake only after it (the
lake writer commits in windows), so versions accepted shortly before the
snapshot and up to the instant are taken from the journal's index too; every
answer names the snapshots it used. Authorization is decided on the record as
it is now (who may see this patient today), masking and erasure apply as for
any read: a patient erased since answers 410.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ingest.access import Access
from ingest.errors import InvalidInputError, Issue, ResourceGoneError, ResourceNotFoundError
from ingest.history import Page
from ingest.journal import VERSION_COLUMNS
from ingest.search import CriteriaMatcher, Criterion, UnsupportedParameter, instant_range, parse_criterion
from ingest.search_memory import matches
from lake.snapshots import SnapshotUsed, VersionAsOf

if TYPE_CHECKING:
    from ingest.reads import ResourceReads, StoredResource

# A version accepted this long before a snapshot may still have been outside it (commit windows).
_COMMIT_MARGIN_US = 15 * 60 * 1_000_000


@dataclass(slots=True)
class AsOf:
    resources: list[StoredResource]
    snapshots: list[SnapshotUsed]
    at_us: int
    used: list[tuple[str, str]] = field(default_factory=list)

    def header(self) -> str:
        return ", ".join(s.label() for s in self.snapshots)


def parse_as_of(value: str) -> int:
    """The instant ``_asOf`` names (the end of a date's day, a dateTime to its precision), in µs."""
    try:
        return instant_range(value)[1]
    except InvalidInputError:
        raise InvalidInputError(
            "invalid _asOf", [Issue("invalid", "_asOf must be a FHIR date or dateTime", ("_asOf",))]
        ) from None


def read_as_of(reads: ResourceReads, rtype: str, rid: str, at_us: int, access: Access | None) -> AsOf:
    """The version of ``rtype/rid`` current at ``at_us``; raises ResourceNotFoundError / ResourceGoneError."""
    cur = reads.journal.current(rtype, rid)
    if cur is None:
        raise ResourceNotFoundError(f"{rtype} resource not found")
    decision = access.require("read", rtype, rid, cur.patient_key) if access is not None else None
    used, rows = reads.lake_versions_as_of(rtype, at_us, ids=[rid])
    found = _merge(rtype, rows, _journal_rows(reads, rtype, used, at_us, "id=?", [rid]))
    if rid not in found:
        raise ResourceNotFoundError(f"{rtype} resource did not exist at that instant")
    version = found[rid]
    if version.deleted:
        raise ResourceGoneError(f"{rtype} resource was deleted then", [Issue("deleted", "the resource was deleted")])
    res = reads.open_version(rtype, version)
    return AsOf(reads.presented([res], access, decision), [used], at_us)


def compartment_as_of(
    reads: ResourceReads, patient_id: str, types: list[str], at_us: int, access: Access | None
) -> AsOf:
    """The patient and the resources of the listed types in its compartment at ``at_us``, Patient first."""
    patient = read_as_of(reads, "Patient", patient_id, at_us, access)
    key = reads.pseudo.patient_key(patient_id)
    out, snapshots = list(patient.resources), list(patient.snapshots)
    for rtype in types:
        if rtype == "Patient":
            continue
        decision = _may_read(access, rtype)
        if decision is False:
            continue
        used, rows = reads.lake_versions_as_of(rtype, at_us, patient_keys=[key])
        snapshots.append(used)
        found = _merge(rtype, rows, _journal_rows(reads, rtype, used, at_us, "patient_key=?", [key]))
        live = sorted((v for v in found.values() if not v.deleted and v.patient_key == key), key=lambda v: v.id)
        visible = _visible(reads, rtype, [v.id for v in live], access, decision)
        opened = [reads.open_version(rtype, v) for v in live if v.id in visible]
        out += reads.presented(opened, access, None if decision is True else decision)
    return AsOf(out, snapshots, at_us)


def _may_read(access: Access | None, rtype: str) -> Any:
    if access is None:
        return True
    from ingest.errors import ForbiddenError

    before = access.denied
    try:
        return access.require_type("read", rtype)
    except ForbiddenError:
        access.denied = before
        return False


def _visible(reads: ResourceReads, rtype: str, ids: list[str], access: Access | None, decision: Any) -> set[str]:
    if access is None or decision is True or not ids:
        return set(ids)
    clause, args = access.visibility(rtype, decision)
    return reads.visible_ids(rtype, set(ids), f"c.rtype=? AND {clause}", args)


def _journal_rows(
    reads: ResourceReads, rtype: str, used: SnapshotUsed, at_us: int, where: str, args: list[object]
) -> list[VersionAsOf]:
    """Versions accepted by ``at_us`` that may have reached the lake only after snapshot ``used``."""
    since = 0 if used.timestamp_ms is None else used.timestamp_ms * 1000 - _COMMIT_MARGIN_US
    conn = reads.journal.reader()
    row = conn.execute("SELECT MIN(seq) FROM transactions WHERE accepted >= ?", (since,)).fetchone()
    if row[0] is None:
        return []
    sql = f"SELECT {VERSION_COLUMNS} FROM versions WHERE seq >= ? AND rtype=? AND last_updated <= ? AND {where}"  # noqa: S608
    rows = conn.execute(sql, (int(row[0]), rtype, at_us, *args)).fetchall()
    return [VersionAsOf(str(r[1]), int(r[2]), int(r[4]), bool(r[5]), r[6], None) for r in rows]


def _merge(rtype: str, lake: list[VersionAsOf], journal: list[VersionAsOf]) -> dict[str, VersionAsOf]:
    """The newest version per id; a lake row (with its body) wins over the same version from the journal."""
    best: dict[str, VersionAsOf] = {}
    for version in [*journal, *lake]:
        held = best.get(version.id)
        if (
            held is None
            or version.version > held.version
            or (version.version == held.version and version.body is not None)
        ):
            best[version.id] = version
    return best


def search_as_of(
    reads: ResourceReads, rtype: str, params: list[tuple[str, str]], at_us: int, access: Access | None
) -> AsOf:
    """A search as of an instant: candidates by ``patient`` / ``subject`` or ``_id`` (one of them is
    required), every other criterion checked on the bodies as they stood (``ingest/search_memory.py``).

    Raises InvalidInputError, ForbiddenError.
    """
    from ingest.reads import PATIENT_TYPES

    matcher = CriteriaMatcher(reads.journal, reads.pseudo, PATIENT_TYPES)
    raw = [(n, v) for n, v in params if n not in _PAGING and n != "_asOf"]
    criteria = [parse_criterion(n, v) for n, v in raw]
    if access is not None:
        access.require_type("search", rtype)
    anchor = next(
        (c for c in criteria if matcher.is_compartment(rtype, c.name) and c.modifier in (None, "Patient")), None
    )
    anchor = anchor or next((c for c in criteria if c.name == "_id" and c.modifier is None), None)
    if anchor is None:
        raise InvalidInputError(
            "unsupported search",
            [Issue("not-supported", "an _asOf search needs a patient, subject or _id criterion", ("_asOf",))],
        )
    found = _candidates(reads, rtype, anchor, at_us, access)
    kept = []
    for res in found.resources:
        doc = orjson.loads(res.body or b"{}")
        try:
            if all(matches(matcher, reads.pseudo, doc, res.last_updated_us, res.patient_key, c) for c in criteria):
                kept.append(res)
        except UnsupportedParameter as exc:
            raise InvalidInputError(
                "unsupported search parameter",
                [Issue("not-supported", f"search parameter '{exc.args[0]}' is not supported", ("_asOf",))],
            ) from None
    return AsOf(kept, found.snapshots, at_us, raw)


def _candidates(reads: ResourceReads, rtype: str, anchor: Criterion, at_us: int, access: Access | None) -> AsOf:
    values = [v for v in anchor.value.split(",") if v]
    out: list[StoredResource] = []
    snapshots: list[SnapshotUsed] = []
    for value in values:
        try:
            if anchor.name == "_id":
                one = read_as_of(reads, rtype, value, at_us, access)
            else:
                one = compartment_as_of(reads, value.split("/")[-1], [rtype], at_us, access)
        except (ResourceNotFoundError, ResourceGoneError):
            continue
        out += [r for r in one.resources if r.resource_type == rtype]
        snapshots = one.snapshots
    return AsOf(out, snapshots, at_us)


_PAGING = frozenset({"_count", "_offset", "_format", "_pretty"})

SNAPSHOT_TAG = "urn:fhirlake:as-of-snapshot"
AsOfRunner = Callable[["ResourceReads", str, list[tuple[str, str]], int, Access | None], tuple[AsOf, Page]]


def compartment_as_of_params(
    reads: ResourceReads, patient_id: str, params: list[tuple[str, str]], max_count: int, access: Access | None
) -> tuple[AsOf, Page]:
    """``Patient/{id}/$everything?_asOf=…[&_type=…]`` as one page."""
    from ingest.reads import PATIENT_TYPES

    at_us = parse_as_of(dict(params)["_asOf"])
    types = [t for n, v in params if n == "_type" for t in v.split(",") if t] or sorted(PATIENT_TYPES)
    found = compartment_as_of(reads, patient_id, types, at_us, access)
    used = [(n, v) for n, v in params if n in ("_asOf", "_type")]
    return found, _page(found, params, max_count, used)


def search_as_of_params(
    reads: ResourceReads, rtype: str, params: list[tuple[str, str]], max_count: int, access: Access | None
) -> tuple[AsOf, Page]:
    at_us = parse_as_of(dict(params)["_asOf"])
    found = search_as_of(reads, rtype, params, at_us, access)
    return found, _page(found, params, max_count, [*found.used, ("_asOf", dict(params)["_asOf"])])


def _page(found: AsOf, params: list[tuple[str, str]], max_count: int, used: list[tuple[str, str]]) -> Page:
    values = dict(params)
    for name in ("_count", "_offset"):
        if name in values and not values[name].isdigit():
            raise InvalidInputError("invalid parameter", [Issue("invalid", f"{name} must be an integer", (name,))])
    count = min(int(values.get("_count", 50)), max_count)
    offset = int(values.get("_offset", 0))
    return Page(found.resources[offset : offset + count], len(found.resources), offset, count, used)
