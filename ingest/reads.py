"""Read use cases: read, vread and the minimal search of this release.

Bodies come from the journal while they are hot and from the lake afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ingest import conditional
from ingest.access import Access
from ingest.errors import (
    InvalidInputError,
    Issue,
    ResourceGoneError,
    ResourceNotFoundError,
)
from ingest.journal import Journal
from lake.errors import LakeDataError
from lake.reader import LakeReader
from security.authz import Decision
from security.errors import KeyShreddedError
from security.policy import field_policy
from security.pseudonym import Pseudonymizer
from security.sealing import BODY_PATH, RowSealer

SEARCH_PARAMS = ("_id", "identifier", "patient", "subject", "family", "birthdate", "phone", "email")
_BLIND = frozenset({"family", "birthdate", "phone", "email"})
# Types whose patient compartment membership is recorded (subject / patient / beneficiary).
PATIENT_TYPES = frozenset(
    {
        "AllergyIntolerance",
        "CarePlan",
        "CareTeam",
        "Claim",
        "Condition",
        "Coverage",
        "Device",
        "DiagnosticReport",
        "DocumentReference",
        "Encounter",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "ImagingStudy",
        "Immunization",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Procedure",
        "RiskAssessment",
        "ServiceRequest",
        "Specimen",
    }
)
_CONTROL = frozenset({"_count", "_offset", "_format", "_pretty"})


def blind_params(rtype: str) -> list[str]:
    """The blind-indexed PHI search parameters of ``rtype`` besides identifier."""
    return sorted(_BLIND & field_policy().of(rtype).blind)


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated_us: int
    deleted: bool
    body: bytes | None
    patient_key: str | None = None


@dataclass(slots=True)
class SearchResult:
    resources: list[StoredResource]
    total: int
    offset: int
    count: int
    used: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


class ResourceReads:
    def __init__(self, journal: Journal, lake: LakeReader, pseudo: Pseudonymizer, sealer: RowSealer) -> None:
        self._journal = journal
        self._lake = lake
        self._pseudo = pseudo
        self._sealer = sealer

    def read(self, rtype: str, rid: str, access: Access | None = None) -> StoredResource:
        """The current version; raises ResourceNotFoundError, ResourceGoneError or ForbiddenError."""
        if access is not None:
            access.require_type("read", rtype)
        cur = self._journal.current(rtype, rid)
        if cur is None:
            raise ResourceNotFoundError(f"{rtype} resource not found")
        return self.vread(rtype, rid, cur.version, access)

    def vread(self, rtype: str, rid: str, version: int, access: Access | None = None) -> StoredResource:
        row = self._journal.version(rtype, rid, version)
        decision = None
        if access is not None:
            access.require_type("read", rtype)
            if row is not None:
                decision = access.require("read", rtype, rid, row[6])
        if row is None:
            raise ResourceNotFoundError(f"{rtype} version not found")
        stored = self._load(rtype, [row])[0]
        if stored.deleted:
            raise ResourceGoneError(f"{rtype} resource was deleted", [Issue("deleted", "the resource was deleted")])
        if decision is not None and access is not None and stored.body is not None:
            return replace(stored, body=access.present(decision, stored.body))
        return stored

    def _load(self, rtype: str, rows: list[tuple[Any, ...]]) -> list[StoredResource]:
        missing = [(str(r[1]), int(r[2]), r[6]) for r in rows if not r[5] and r[13] is None]
        cold = self._lake.bodies(rtype, missing) if missing else {}
        out = []
        for r in rows:
            rid, version = str(r[1]), int(r[2])
            sealed = r[13] if r[13] is not None else cold.get((rid, version))
            if sealed is None and not r[5]:
                raise LakeDataError("a resource version is indexed but its body was not found in the lake")
            try:
                body = None if sealed is None else self._sealer.open(rtype, rid, version, BODY_PATH, bytes(sealed))
            except KeyShreddedError:
                raise ResourceGoneError(
                    f"{rtype} resource was erased", [Issue("deleted", "the patient of this resource was erased")]
                ) from None
            out.append(StoredResource(rtype, rid, version, int(r[4]), bool(r[5]), body, r[6]))
        return out

    def search(
        self, rtype: str, params: list[tuple[str, str]], *, strict: bool, max_count: int, access: Access | None = None
    ) -> SearchResult:
        """Search ``rtype`` by ``_id``, ``identifier``, ``patient``/``subject`` and the blind-indexed PHI.

        Raises InvalidInputError for unknown parameters when ``strict``.
        """
        count, offset = 50, 0
        used: list[tuple[str, str]] = []
        ignored: list[str] = []
        ids: set[str] | None = None
        conn = self._journal.reader()
        decision: Decision | None = None
        visible, vis_params = "1=1", list[object]()
        if access is not None:
            decision = access.require_type("search", rtype)
            visible, vis_params = access.visibility(rtype, decision)
        for name, value in params:
            base = name.split(":", 1)[0]
            if name == "_count":
                count = _int_param(name, value, 0, max_count)
            elif name == "_offset":
                offset = _int_param(name, value, 0, 10**9)
            elif name in _CONTROL:
                continue
            elif (
                base != name
                or base not in SEARCH_PARAMS
                or (base in ("patient", "subject") and rtype not in PATIENT_TYPES)
                or (base in _BLIND and base not in field_policy().of(rtype).blind)
                or (base == "birthdate" and value[:2].isalpha() and not value.startswith("eq"))
            ):
                if strict:
                    raise InvalidInputError(
                        "unsupported search parameter",
                        [Issue("not-supported", f"search parameter '{name}' is not supported", (name,))],
                    )
                ignored.append(name)
                continue
            else:
                found = self._match(rtype, base, value)
                ids = found if ids is None else ids & found
                used.append((name, value))
        where = f"c.rtype=? AND c.deleted=0 AND {visible}"
        if ids is None:  # no criteria: page in SQL instead of loading every id of the type
            total = int(
                conn.execute(f"SELECT COUNT(*) FROM current c WHERE {where}", (rtype, *vis_params)).fetchone()[0]  # noqa: S608
            )
            rows = conn.execute(
                f"SELECT c.id FROM current c WHERE {where} ORDER BY c.id LIMIT ? OFFSET ?",  # noqa: S608
                (rtype, *vis_params, count, offset),
            ).fetchall()
            page_ids = [str(r[0]) for r in rows]
            return SearchResult(self._present(rtype, page_ids, access, decision), total, offset, count, used, ignored)
        if access is not None:  # only what the caller may see counts
            ids = self._visible(rtype, ids, where, vis_params)
        ordered = sorted(ids)
        page = ordered[offset : offset + count]
        resources = self._present(rtype, page, access, decision)
        return SearchResult(resources, len(ordered), offset, count, used, ignored)

    def _match(self, rtype: str, name: str, value: str) -> set[str]:
        if name == "_id":
            return {i for i in value.split(",") if self._live(rtype, i)}
        if name == "identifier":
            tokens = conditional.query_tokens(self._pseudo, rtype, value)
            return set(self._journal.ids_by_token(rtype, tokens))
        if name in _BLIND:  # exact match on the normalized value, through the blind index
            values = [v.removeprefix("eq") if name == "birthdate" else v for v in value.split(",")]
            return set(self._journal.ids_by_token(rtype, {self._pseudo.token(rtype, name, v) for v in values}))
        keys = [self._pseudo.patient_key(v.split("/")[-1]) for v in value.split(",") if v]
        if any(v.count("/") > 1 or ("/" in v and not v.startswith("Patient/")) for v in value.split(",")):
            return set()
        marks = ",".join("?" * len(keys))
        rows = (
            self._journal.reader()
            .execute(
                f"SELECT id FROM current WHERE patient_key IN ({marks}) AND rtype=? AND deleted=0",  # noqa: S608
                (*keys, rtype),
            )
            .fetchall()
        )
        return {str(r[0]) for r in rows}

    def _visible(self, rtype: str, ids: set[str], where: str, params: list[object]) -> set[str]:
        out: set[str] = set()
        wanted = sorted(ids)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = (
                self._journal.reader()
                .execute(
                    f"SELECT c.id FROM current c WHERE {where} AND c.id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                    (rtype, *params, *chunk),
                )
                .fetchall()
            )
            out.update(str(r[0]) for r in rows)
        return out

    def _present(
        self, rtype: str, ids: list[str], access: Access | None, decision: Decision | None
    ) -> list[StoredResource]:
        rows = self._current_rows(rtype, ids)
        if access is not None:
            for row in rows:
                access.disclosed(row.resource_type, row.id, row.patient_key)
        if access is None or decision is None or not decision.masked:
            return rows
        return [r if r.body is None else replace(r, body=access.present(decision, r.body)) for r in rows]

    def _live(self, rtype: str, rid: str) -> bool:
        cur = self._journal.current(rtype, rid)
        return cur is not None and not cur.deleted

    def _current_rows(self, rtype: str, ids: list[str]) -> list[StoredResource]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = (
            self._journal.reader()
            .execute(
                "SELECT v.rtype, v.id, v.version, v.seq, v.last_updated, v.deleted, v.patient_key, v.status, "  # noqa: S608
                "v.code_system, v.code, v.effective_year, v.value_num, v.value_unit, v.body, v.phi FROM current c "
                f"JOIN versions v ON v.rtype=c.rtype AND v.id=c.id AND v.version=c.version "
                f"WHERE c.rtype=? AND c.id IN ({marks}) ORDER BY c.id",
                (rtype, *ids),
            )
            .fetchall()
        )
        return self._load(rtype, rows)


def _int_param(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit():
        raise InvalidInputError(
            "invalid parameter", [Issue("invalid", f"{name} must be a non-negative integer", (name,))]
        )
    return max(low, min(int(value), high))
