"""Authorization: Casbin (RBAC with tenants as domains, ABAC conditions) and SMART scopes, both required.

``Authorizer.decide`` answers one question — may this principal do this action
on this object — from two independent grants: the Casbin policy of the
caller's role (``authz_model.conf``, ``authz_policy.csv``, data shipped with
the project; a database adapter replaces the CSV in production) and the
SMART scopes of the caller's token. The default is deny. Decisions depend
only on a few attributes, so they are memoized: authorizing every entry of a
large bundle costs a dictionary lookup each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import casbin

from security.principal import Principal, Role
from security.scopes import ScopeError, ScopeSet


class Kind(StrEnum):
    CLINICAL = "clinical"  # FHIR resources
    ERASURE = "erasure"  # $purge, keys shred
    ADMIN = "admin"  # keys, DR and other operations
    AUDIT = "audit"  # audit trail and reports
    BREAK_GLASS = "break-glass"


class Relation(StrEnum):
    NONE = "none"  # the resource is in no patient compartment
    OWN = "own"  # the caller's bound patient
    CARE = "care"  # the caller's organization or care team
    BTG = "btg"  # an active break-glass grant
    OTHER = "other"


# Action -> SMART permission letter.
PERMISSION = {"read": "r", "search": "s", "create": "c", "update": "u", "delete": "d"}
# Which scope contexts count for a role: patient apps only patient/…, users user/…, backends system/….
CONTEXTS: dict[Role, frozenset[str]] = {
    Role.PATIENT_APP: frozenset({"patient"}),
    Role.CLINICIAN: frozenset({"user"}),
    Role.EMR_INTEGRATION: frozenset({"system"}),
    Role.RESEARCHER: frozenset({"system", "user"}),
    Role.COMPLIANCE_OFFICER: frozenset({"system", "user"}),
    Role.OPS: frozenset({"system", "user"}),
}
MASKED_ROLES = frozenset({Role.RESEARCHER})  # get de-identified resources only


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    resource_type: str = "*"
    relation: Relation = Relation.NONE


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    masked: bool = False  # de-identify at decrypt time
    flagged: bool = False  # break-glass: always flagged for review
    why: str = ""  # a reason code for audit, never PHI
    constraints: tuple[tuple[str, str], ...] = ()  # scope constraints the resource must also meet


DENY_ROLE = Decision(False, why="role")
DENY_SCOPE = Decision(False, why="scope")


@dataclass(frozen=True, slots=True)
class _Obj:
    kind: str
    resource_type: str
    relation: str


class Authorizer:
    def __init__(self, tenant: str, enforcer: Any | None = None) -> None:
        self.tenant = tenant
        self._enforcer = enforcer or _embedded_enforcer()
        self._enforcer.add_function("related", lambda obj, names: obj.relation in str(names).split())
        self._lock = threading.Lock()
        self._known: set[tuple[str, str, str]] = set()
        self._memo: dict[tuple[Any, ...], Decision] = {}
        self._scopes: dict[tuple[str, ...], ScopeSet] = {}

    def decide(self, principal: Principal, action: str, target: Target) -> Decision:
        """Whether ``principal`` may ``action`` the ``target`` of this tenant (default deny)."""
        key = (principal.client_id, principal.role, principal.tenant, principal.scopes, action, target)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._decide(principal, action, target)
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo[key] = hit
        return hit

    def _decide(self, principal: Principal, action: str, target: Target) -> Decision:
        self._assign(principal)
        obj = _Obj(target.kind.value, target.resource_type, target.relation.value)
        with self._lock:  # pycasbin's model is not documented as thread-safe
            allowed = self._enforcer.enforce(principal, self.tenant, obj, action)
        if not allowed:
            return DENY_ROLE
        constraints: tuple[tuple[str, str], ...] = ()
        if target.kind is Kind.CLINICAL:
            scopes = self._scope_set(principal.scopes)
            contexts = CONTEXTS[principal.role]
            if principal.role is Role.PATIENT_APP and target.relation not in (Relation.OWN, Relation.NONE):
                return DENY_SCOPE
            grants = scopes.matching(target.resource_type, PERMISSION[action], contexts)
            if not grants:
                return DENY_SCOPE
            if all(g.constraints for g in grants):  # only constrained scopes grant it: the resource must match
                constraints = tuple(sorted({c for g in grants for c in g.constraints}))
        elif target.kind is Kind.ERASURE and not self._scope_set(principal.scopes).matching(
            "Patient", "d", CONTEXTS[principal.role]
        ):
            return DENY_SCOPE
        return Decision(
            True,
            masked=principal.role in MASKED_ROLES,
            flagged=target.relation is Relation.BTG,
            why="break-glass" if target.relation is Relation.BTG else "policy",
            constraints=constraints,
        )

    def _assign(self, principal: Principal) -> None:
        """RBAC with domains: the caller holds its role only in its own tenant."""
        grant = (principal.client_id, principal.role.value, principal.tenant)
        if grant not in self._known:
            with self._lock:
                self._enforcer.add_grouping_policy(*grant)
                self._known.add(grant)

    def _scope_set(self, scopes: tuple[str, ...]) -> ScopeSet:
        cached = self._scopes.get(scopes)
        if cached is None:
            try:
                cached = ScopeSet.parse(scopes)
            except ScopeError:  # a malformed scope grants nothing, never more
                cached = ScopeSet(())
            self._scopes[scopes] = cached
        return cached


def _embedded_enforcer() -> Any:
    folder = resources.files("security")
    with resources.as_file(folder / "authz_model.conf") as model, resources.as_file(folder / "authz_policy.csv") as pol:
        return casbin.Enforcer(str(model), str(pol))


def shipped_policy() -> list[list[str]]:
    """The policy lines shipped with the project (``authz_policy.csv``), comments dropped."""
    rules: list[list[str]] = _embedded_enforcer().get_policy()  # Casbin's own parser (nested commas)
    return [["p", *rule] for rule in rules]


def database_enforcer(url: str) -> Any:
    """An enforcer whose policy lives in the database at ``url`` (seeded from the shipped policy)."""
    from security.policy_store import SqlPolicyAdapter

    adapter = SqlPolicyAdapter(url)
    adapter.seed(shipped_policy())
    with resources.as_file(resources.files("security") / "authz_model.conf") as model:
        return casbin.Enforcer(str(model), adapter)
