"""Casbin policy in PostgreSQL (the production profile) decides exactly like the shipped CSV."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from security.authz import Authorizer, Kind, Relation, Target, database_enforcer, shipped_policy
from security.principal import Principal, Role
from security.scopes import ScopeSet
from tests.fixtures.postgres import private_schema


@pytest.fixture
def schema_url() -> Iterator[str]:
    with private_schema("authz") as url:
        yield url


def test_database_policy_is_seeded_and_decides_like_the_csv(schema_url: str) -> None:
    embedded = Authorizer("default")
    stored = Authorizer("default", database_enforcer(schema_url))
    assert database_enforcer(schema_url).get_policy() == [rule[1:] for rule in shipped_policy()]  # seeded once
    principals = [
        Principal(f"c-{role.value}", tenant, role, scopes)
        for role in Role
        for tenant in ("default", "other")
        for scopes in (("system/*.cruds", "user/*.rs", "patient/*.rs"), ("system/Patient.d",))
    ]
    targets = [Target(kind, "Observation", rel) for kind in Kind for rel in Relation]
    decisions = 0
    for principal in principals:
        for target in targets:
            for action in ("read", "search", "create", "update", "delete", "execute", "request"):
                want = embedded.decide(principal, action, target)
                assert stored.decide(principal, action, target) == want
                decisions += 1
    assert decisions > 1000
    assert ScopeSet.parse("system/*.cruds").scopes


def test_a_rule_removed_in_the_database_takes_effect(schema_url: str) -> None:
    enforcer = database_enforcer(schema_url)
    ops = Principal("ops-1", "default", Role.OPS, ("system/Patient.d",))
    assert Authorizer("default", enforcer).decide(ops, "execute", Target(Kind.ERASURE)).allowed
    enforcer.remove_filtered_policy(0, "ops", "*", "erasure")
    assert not Authorizer("default", database_enforcer(schema_url)).decide(ops, "execute", Target(Kind.ERASURE)).allowed
