"""The field policy: which elements of which resource type are PHI, and how they are searched.

Loaded from ``field_policy.toml`` (data, reviewed with the compliance office)
on first use. Pure data and normalization: it runs inside the validation
workers, next to the other extraction.
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

BLIND_PARAMS = ("identifier", "family", "birthdate", "phone", "email")


@dataclass(frozen=True, slots=True)
class TypePolicy:
    fields: tuple[str, ...]  # sealed one by one into the phi column (and inside the body)
    body: tuple[str, ...]  # PHI sealed only inside the body
    blind: frozenset[str]  # blind-indexed search parameters of the type


@dataclass(frozen=True, slots=True)
class FieldPolicy:
    default: TypePolicy
    types: dict[str, TypePolicy]

    def of(self, resource_type: str) -> TypePolicy:
        return self.types.get(resource_type, self.default)

    def phi_elements(self, resource_type: str) -> tuple[str, ...]:
        """Every element of ``resource_type`` the policy names as PHI."""
        spec = self.of(resource_type)
        return spec.fields + spec.body


@lru_cache(maxsize=1)
def field_policy() -> FieldPolicy:
    """The policy shipped with this release (read once per process)."""
    doc = tomllib.loads(resources.files("security").joinpath("field_policy.toml").read_text())
    base = doc["default"]
    blind: dict[str, list[str]] = doc["blind_index"]

    def build(rtype: str, spec: dict[str, list[str]]) -> TypePolicy:
        params = frozenset(p for p, types in blind.items() if "*" in types or rtype in types)
        fields = tuple(dict.fromkeys([*base.get("fields", []), *spec.get("fields", [])]))
        body = tuple(dict.fromkeys([*base.get("body", []), *spec.get("body", [])]))
        return TypePolicy(fields, body, params)

    types = {rtype: build(rtype, spec) for rtype, spec in doc["types"].items()}
    return FieldPolicy(build("*", {}), types)


def normalize(param: str, value: str) -> str:
    """The form a blind-indexed value is hashed in; the same for stored values and queries."""
    if param in ("family", "given"):
        folded = unicodedata.normalize("NFKD", value)
        folded = "".join(c for c in folded if not unicodedata.combining(c))
        return " ".join(folded.casefold().split())
    if param == "phone":
        return "".join(c for c in value if c.isdigit())
    if param == "email":
        return value.strip().casefold()
    return value.strip()
