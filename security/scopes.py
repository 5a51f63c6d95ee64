"""SMART App Launch v2 scopes: ``(patient|user|system)/(Type|*).[cruds][?param=value…]``.

v1 forms ``.read``, ``.write`` and ``.*`` are accepted as aliases (``rs``, ``cud``,
``cruds``). A malformed scope is refused, never widened or guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from security.errors import InvalidScopeError

PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(\?.+)?$")
# Scopes that carry no resource permission; accepted and ignored by authorization.
NON_RESOURCE = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"}
)
_CONSTRAINTS = frozenset({"category"})


class ScopeError(InvalidScopeError):
    """A scope is not well formed (never widened or guessed at)."""


@dataclass(frozen=True, slots=True)
class Scope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    permissions: frozenset[str]  # subset of "cruds"
    constraints: tuple[tuple[str, str], ...] = ()  # e.g. (("category", "laboratory"),)

    def grants(self, resource_type: str, permission: str) -> bool:
        return permission in self.permissions and self.resource_type in ("*", resource_type)

    def covers(self, other: Scope) -> bool:
        """Whether everything ``other`` grants is granted by this scope."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and other.permissions <= self.permissions
            and set(self.constraints) <= set(other.constraints)
        )


def parse_scope(text: str) -> Scope:
    """One resource scope. Raises ScopeError when it is not well formed."""
    match = _SCOPE.match(text)
    if match is None:
        raise ScopeError("a scope is malformed")
    context, rtype, perms, query = match.groups()
    if perms in _V1:
        if query:
            raise ScopeError("v1 scopes take no constraints")
        perms = _V1[perms]
    if not perms or any(p not in PERMISSIONS for p in perms) or "".join(sorted(perms, key=PERMISSIONS.index)) != perms:
        raise ScopeError("scope permissions must be a subset of c, r, u, d, s in that order")
    if len(set(perms)) != len(perms):
        raise ScopeError("a scope repeats a permission")
    constraints: tuple[tuple[str, str], ...] = ()
    if query:
        pairs = parse_qsl(query[1:], keep_blank_values=True, strict_parsing=False)
        if not pairs or any(name not in _CONSTRAINTS or not value for name, value in pairs):
            raise ScopeError("a scope constraint is not supported (only category=…)")
        constraints = tuple(sorted(pairs))
    return Scope(context, rtype, frozenset(perms), constraints)


@dataclass(frozen=True, slots=True)
class ScopeSet:
    scopes: tuple[Scope, ...]

    @classmethod
    def parse(cls, texts: str | Iterable[str]) -> ScopeSet:
        """Resource scopes of a space-separated string (or list). Raises ScopeError on any malformed one."""
        items = texts.split() if isinstance(texts, str) else list(texts)
        return cls(tuple(parse_scope(t) for t in items if t not in NON_RESOURCE))

    def matching(self, resource_type: str, permission: str, contexts: Iterable[str]) -> list[Scope]:
        allowed = set(contexts)
        return [s for s in self.scopes if s.context in allowed and s.grants(resource_type, permission)]

    def covers(self, other: ScopeSet) -> bool:
        """Every scope of ``other`` is within some scope here (used to refuse widening)."""
        return all(any(mine.covers(theirs) for mine in self.scopes) for theirs in other.scopes)
