"""Read use cases: read, vread and the minimal search of this release.

Bodies come from the journal while they are hot and from the lake afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ingest.access import Access
from ingest.errors import (
    Issue,
    ResourceGoneError,
    ResourceNotFoundError,
)
from ingest.journal import Journal
from lake.errors import LakeDataError
from lake.reader import LakeReader
from lake.snapshots import SnapshotUsed, VersionAsOf
from security.authz import Decision
from security.errors import KeyShreddedError
from security.pseudonym import Pseudonymizer
from security.sealing import BODY_PATH, RowSealer

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
    included: list[StoredResource] = field(default_factory=list)
    summary_count: bool = False


class ResourceReads:
    def __init__(self, journal: Journal, lake: LakeReader, pseudo: Pseudonymizer, sealer: RowSealer) -> None:
        self._journal = journal
        self._lake = lake
        self._pseudo = pseudo
        self._sealer = sealer

    @property
    def journal(self) -> Journal:
        return self._journal

    @property
    def pseudo(self) -> Pseudonymizer:
        return self._pseudo

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
            access.labelled(rtype, rid, stored.body)
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
            body = None if sealed is None else self._open(rtype, rid, version, bytes(sealed))
            out.append(StoredResource(rtype, rid, version, int(r[4]), bool(r[5]), body, r[6]))
        return out

    def lake_rows(
        self, rtype: str, patient_keys: list[str] | None
    ) -> tuple[int, Iterator[list[tuple[str, int, bytes | None]]]]:
        """Rows of ``rtype`` from the current lake snapshot, in batches, and the journal seq it covers."""
        return self._lake.pinned_rows(rtype, patient_keys)

    def open_body(self, rtype: str, rid: str, version: int, sealed: bytes) -> bytes:
        """Decrypt a stored body; raises ResourceGoneError when its patient was erased."""
        return self._open(rtype, rid, version, sealed)

    def _open(self, rtype: str, rid: str, version: int, sealed: bytes) -> bytes:
        try:
            return self._sealer.open(rtype, rid, version, BODY_PATH, sealed)
        except KeyShreddedError:
            raise ResourceGoneError(
                f"{rtype} resource was erased", [Issue("deleted", "the patient of this resource was erased")]
            ) from None

    def search(
        self, rtype: str, params: list[tuple[str, str]], *, strict: bool, max_count: int, access: Access | None = None
    ) -> SearchResult:
        """Search ``rtype`` (criteria: ``ingest/search.py``; paging, sorting, includes: ``ingest/searchset.py``)."""
        from ingest.searchset import run_search

        return run_search(self, rtype, params, strict=strict, max_count=max_count, access=access)

    def visible_ids(self, rtype: str, ids: set[str], where: str, params: list[object]) -> set[str]:
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

    def present(
        self, rtype: str, ids: list[str], access: Access | None, decision: Decision | None
    ) -> list[StoredResource]:
        rows = self.current_rows(rtype, ids)
        if access is not None:
            for row in rows:
                access.disclosed(row.resource_type, row.id, row.patient_key, row.body)
        if access is None or decision is None or not decision.masked:
            return rows
        return [r if r.body is None else replace(r, body=access.present(decision, r.body)) for r in rows]

    def lake_versions_as_of(
        self, rtype: str, at_us: int, *, ids: list[str] | None = None, patient_keys: list[str] | None = None
    ) -> tuple[SnapshotUsed, list[VersionAsOf]]:
        return self._lake.versions_as_of(rtype, at_us, ids=ids, patient_keys=patient_keys)

    def open_version(self, rtype: str, version: VersionAsOf) -> StoredResource:
        """The body of a version found as of an instant (from its lake row, else as a vread would)."""
        if version.body is None:
            row = self._journal.version(rtype, version.id, version.version)
            if row is None:
                raise ResourceNotFoundError(f"{rtype} version not found")
            return self._load(rtype, [row])[0]
        body = self._open(rtype, version.id, version.version, version.body)
        return StoredResource(
            rtype, version.id, version.version, version.last_updated_us, version.deleted, body, version.patient_key
        )

    def presented(
        self, loaded: list[StoredResource], access: Access | None, decision: Decision | None
    ) -> list[StoredResource]:
        """Note each resource as disclosed and mask it as ``decision`` says."""
        if access is None:
            return loaded
        for res in loaded:
            access.disclosed(res.resource_type, res.id, res.patient_key, res.body)
        if decision is None or not decision.masked:
            return loaded
        return [r if r.body is None else replace(r, body=access.present(decision, r.body)) for r in loaded]

    def load_versions(
        self, rtype: str, rows: list[tuple[Any, ...]], access: Access | None, decision: Decision | None
    ) -> list[StoredResource]:
        """Bodies of version rows (``VERSION_COLUMNS`` order) as ``access`` may see them."""
        return self.presented(self._load(rtype, rows), access, decision)

    def current_rows(self, rtype: str, ids: list[str]) -> list[StoredResource]:
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
