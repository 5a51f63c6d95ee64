"""Per-request access control: authorization of every interaction, entry and search row.

The gateway authenticates a caller into a ``Principal``; this module decides,
with ``security.authz.Authorizer``, what that caller may see and do, and makes
sure reads, searches and counts never reveal anything else. A caller who may
never touch a resource type gets 403; a single resource it may not see answers
exactly like one that does not exist (404).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

from ingest.errors import ForbiddenError, Issue, ResourceNotFoundError
from ingest.journal import Journal, cares_for
from security.authz import Authorizer, Decision, Kind, Relation, Target
from security.breakglass import BreakGlassLedger
from security.labels import sensitivity_of
from security.masking import deidentify
from security.principal import Principal, Role
from security.pseudonym import Pseudonymizer

_BEST = {Role.PATIENT_APP: Relation.OWN, Role.CLINICIAN: Relation.CARE}


@dataclass
class Access:
    principal: Principal
    authorizer: Authorizer
    journal: Journal
    pseudo: Pseudonymizer
    ledger: BreakGlassLedger
    _relations: dict[str | None, Relation] = field(default_factory=dict)
    flagged: bool = False  # a break-glass grant was used by this request
    references: list[str] = field(default_factory=list)  # resources disclosed to the caller (for audit)
    patient_keys: set[str] = field(default_factory=set)  # whose records they were (pseudonymous keys)
    denied: bool = False  # a decision in this request said no
    labels: Counter[tuple[str, str]] = field(default_factory=Counter)  # (system, code) -> sensitive records
    _sensitive: set[str] = field(default_factory=set)  # which disclosed references were sensitive (never audited)

    def disclosed(self, rtype: str, rid: str, patient_key: str | None, body: bytes | None = None) -> None:
        """Note a resource handed to the caller: the audit record lists it (accounting of disclosures).

        With its clear ``body`` (before masking), its sensitivity labels are noted too (:meth:`labelled`).
        """
        if len(self.references) < 1000:
            self.references.append(f"{rtype}/{rid}")
        if patient_key is not None:
            self.patient_keys.add(patient_key)
        if body is not None:
            self.labelled(rtype, rid, body)

    def labelled(self, rtype: str, rid: str, body: bytes) -> None:
        """Count the sensitivity codes of a disclosed resource, once per resource and request."""
        ref = f"{rtype}/{rid}"
        if ref in self._sensitive:
            return
        found = sensitivity_of(body)
        if found:
            self._sensitive.add(ref)
            self.labels.update(found)

    @property
    def sensitive_count(self) -> int:
        """How many distinct sensitive resources this request disclosed."""
        return len(self._sensitive)

    @property
    def own_key(self) -> str | None:
        patient = self.principal.patient
        return None if patient is None else self.pseudo.patient_key(patient.removeprefix("Patient/"))

    def relation(self, patient_key: str | None) -> Relation:
        if patient_key is None:
            return Relation.NONE
        cached = self._relations.get(patient_key)
        if cached is None:
            cached = self._relation(patient_key)
            self._relations[patient_key] = cached
        return cached

    def _relation(self, patient_key: str) -> Relation:
        role = self.principal.role
        if role is Role.PATIENT_APP:
            return Relation.OWN if patient_key == self.own_key else Relation.OTHER
        if role is Role.CLINICIAN:
            org, member = self.principal.organization, self.principal.fhir_user
            if cares_for(self.journal.reader(), patient_key, org, member):
                return Relation.CARE
            if self.ledger.active(self.principal.client_id, patient_key):
                return Relation.BTG
            return Relation.OTHER
        return Relation.NONE  # the policy of other roles does not depend on the patient

    def decide(self, action: str, rtype: str, patient_key: str | None) -> Decision:
        decision = self.authorizer.decide(
            self.principal, action, Target(Kind.CLINICAL, rtype, self.relation(patient_key))
        )
        if decision.flagged:
            self.flagged = True
        return decision

    def require_type(self, action: str, rtype: str) -> Decision:
        """403 unless the caller may ``action`` at least some ``rtype`` resources."""
        best = _BEST.get(self.principal.role, Relation.NONE)
        decision = self.authorizer.decide(self.principal, action, Target(Kind.CLINICAL, rtype, best))
        if not decision.allowed:
            none = self.authorizer.decide(self.principal, action, Target(Kind.CLINICAL, rtype, Relation.NONE))
            if not none.allowed:
                self.denied = True
                raise ForbiddenError("forbidden", [Issue("forbidden", f"not permitted to {action} {rtype} resources")])
            return none
        return decision

    def require(self, action: str, rtype: str, rid: str, patient_key: str | None) -> Decision:
        """Authorize one resource; one the caller may not see answers as if it did not exist (404)."""
        self.require_type(action, rtype)
        decision = self.decide(action, rtype, patient_key)
        if not decision.allowed or not self.meets_constraints(decision, rtype, rid):
            self.denied = True
            raise ResourceNotFoundError(f"{rtype} resource not found")
        self.disclosed(rtype, rid, patient_key)
        return decision

    def require_kind(self, kind: Kind | str, action: str) -> Decision:
        """403 unless the caller may ``action`` on a non-clinical object (erasure, admin, audit, break-glass)."""
        kind = Kind(kind)
        decision = self.authorizer.decide(self.principal, action, Target(kind))
        if not decision.allowed:
            self.denied = True
            raise ForbiddenError("forbidden", [Issue("forbidden", f"not permitted: {kind.value} {action}")])
        return decision

    def meets_constraints(self, decision: Decision, rtype: str, rid: str) -> bool:
        if not decision.constraints:
            return True
        clause, params = _category_clause(decision)
        row = (
            self.journal.reader()
            .execute(f"SELECT 1 FROM current c WHERE c.rtype=? AND c.id=? AND {clause}", (rtype, rid, *params))  # noqa: S608
            .fetchone()
        )
        return row is not None

    def visibility(self, rtype: str, decision: Decision) -> tuple[str, list[object]]:
        """An SQL condition over ``current c`` selecting only rows the caller may see."""
        clauses: list[str] = []
        params: list[object] = []
        role = self.principal.role
        if role is Role.PATIENT_APP:
            clauses.append("(c.patient_key = ? OR c.patient_key IS NULL)")
            params.append(self.own_key or "")
        elif role is Role.CLINICIAN:
            grants = self.ledger.active_keys(self.principal.client_id)
            marks = ",".join("?" * len(grants)) or "NULL"
            clauses.append(
                "(c.patient_key IS NULL OR c.patient_key IN (SELECT patient_key FROM patient_access "  # noqa: S608
                f"WHERE (attr='org' AND value=?) OR (attr='member' AND value=?)) OR c.patient_key IN ({marks}))"
            )
            params += [self.principal.organization or "", self.principal.fhir_user or "", *grants]
        if decision.constraints:
            clause, extra = _category_clause(decision)
            clauses.append(clause)
            params += extra
        return (" AND ".join(clauses) or "1=1"), params

    def present(self, decision: Decision, body: bytes) -> bytes:
        """The body as this caller may see it (de-identified for masked roles)."""
        if not decision.masked:
            return body
        return orjson.dumps(deidentify(orjson.loads(body)))


def _category_clause(decision: Decision) -> tuple[str, list[object]]:
    """Rows whose clear category codes include one the scope constraints name (``code`` or ``system|code``)."""
    values = [value for name, value in decision.constraints if name == "category"]
    clause = " OR ".join("instr(c.category, ?) > 0" for _ in values) or "0"
    return f"(c.category IS NOT NULL AND ({clause}))", [f" {v} " for v in values]
