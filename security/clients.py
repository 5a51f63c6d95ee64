"""The client registry: backend-service clients, their public keys and granted SMART scopes.

One SQLite file (``<data>/auth/auth.db``, mode 0600) holds a row per client
(tenant, role, registered scopes, a JWKS of public keys, optional patient /
organization / fhirUser bindings) and the ``jti`` of every client assertion
seen until it expires, so an assertion cannot be replayed (RFC 7523 §3).

Scopes follow SMART App Launch v2 (``context/Type.cruds[?param=value&…]``,
with the v1 ``.read``/``.write``/``.*`` aliases). Anything else is refused:
a scope is never widened or guessed at.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from security.errors import InvalidScopeError, KeyStoreError, SecurityError
from security.principal import Role
from security.scopes import Scope, ScopeSet, parse_scope

with warnings.catch_warnings():
    # authlib 1.9 deprecates authlib.jose for joserfc; its deprecate module installs an "always" filter on
    # import, so it is imported first and our "ignore" goes in front of it (both are undone on exit).
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.jose import JsonWebKey

ASSERTION_ALGS = ("RS384", "ES384")
MIN_RSA_BITS = 2048
JTI_MAX_LEN = 256
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}
_ALG_OF = {"RSA": "RS384", "EC": "ES384"}
# A seen jti is kept this long past its assertion's exp: longer than any clock-skew allowance.
_JTI_GRACE_S = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL, scope TEXT NOT NULL,
    jwks TEXT NOT NULL, patient TEXT, organization TEXT, fhir_user TEXT, source_system TEXT,
    created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen_jti (
    client_id TEXT NOT NULL, jti TEXT NOT NULL, exp INTEGER NOT NULL, PRIMARY KEY (client_id, jti));
CREATE INDEX IF NOT EXISTS seen_jti_exp ON seen_jti(exp);
"""
_COLUMNS = "client_id, tenant, role, scope, jwks, patient, organization, fhir_user, source_system, created"
_INSERT = f"INSERT INTO clients ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 (constant)


class ClientRegistrationError(SecurityError):
    """A client registration was refused (bad role, key, identifier or binding)."""

    code = "client-registration"


class ClientExistsError(ClientRegistrationError):
    code = "client-exists"


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """Every scope of a space-separated string, each a resource scope (backend clients ask for nothing else).

    Raises InvalidScopeError on any malformed one.
    """
    return tuple(parse_scope(item) for item in text.split())


def covered(requested: tuple[Scope, ...], granted: tuple[Scope, ...]) -> bool:
    """Whether each requested scope lies within some granted scope."""
    return ScopeSet(granted).covers(ScopeSet(requested))


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    tenant: str
    role: Role
    scope: str  # registered scopes, space-separated
    jwks: dict[str, Any] = field(repr=False)  # public keys only
    patient: str | None = None
    organization: str | None = None
    fhir_user: str | None = None
    source_system: str | None = None
    created: int = 0

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(str(key["kid"]) for key in self.jwks["keys"])

    def key(self, kid: object) -> dict[str, Any] | None:
        """The registered public JWK named ``kid``, or None."""
        return next((dict(k) for k in self.jwks["keys"] if isinstance(kid, str) and k["kid"] == kid), None)


def jwk_from_pem(pem: bytes) -> dict[str, Any]:
    """A public PEM key (RSA ≥2048 or EC P-384) as a JWK whose kid is its RFC 7638 thumbprint.

    Raises ClientRegistrationError for a private, unsupported or unreadable key.
    """
    if b"PRIVATE KEY" in pem:
        raise ClientRegistrationError("expected a public key, got a private key: register the public half only")
    try:
        key = JsonWebKey.import_key(pem)
    except (ValueError, TypeError):
        raise ClientRegistrationError("the public key is not a readable PEM key") from None
    return _public_jwk(key.as_dict(is_private=False), kid=None)


def jwks_from_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a registered JWKS: public RSA/EC P-384 signing keys, unique kids (thumbprint when absent).

    Raises ClientRegistrationError for private material, unsupported keys or duplicate kids.
    """
    keys = doc.get("keys")
    if not isinstance(keys, list) or not keys or len(keys) > 10:
        raise ClientRegistrationError("a JWKS needs between 1 and 10 keys")
    out = []
    for raw in keys:
        if not isinstance(raw, dict) or _PRIVATE_MEMBERS & raw.keys():
            raise ClientRegistrationError("a JWKS may hold public keys only")
        kid = raw.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise ClientRegistrationError("a JWK kid must be a non-empty string")
        out.append(_public_jwk(raw, kid))
    if len({k["kid"] for k in out}) != len(out):
        raise ClientRegistrationError("kids of a JWKS must be unique")
    return {"keys": out}


def _public_jwk(raw: Mapping[str, Any], kid: str | None) -> dict[str, Any]:
    kty = raw.get("kty")
    if kty not in _ALG_OF or raw.get("use", "sig") != "sig" or raw.get("alg", _ALG_OF[kty]) != _ALG_OF[kty]:
        raise ClientRegistrationError("only RSA and EC P-384 signing keys (RS384, ES384) are accepted")
    try:
        key = JsonWebKey.import_key({name: raw[name] for name in ("kty", *_PUBLIC_MEMBERS[kty])})
        public = key.get_public_key()  # authlib parses lazily: this is where a bad key fails
    except (KeyError, ValueError, TypeError):
        raise ClientRegistrationError("a public key is malformed") from None
    if kty == "RSA" and public.key_size < MIN_RSA_BITS:
        raise ClientRegistrationError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    if kty == "EC" and key["crv"] != "P-384":
        raise ClientRegistrationError("EC keys must be on curve P-384 (ES384)")
    jwk: dict[str, Any] = {name: raw[name] for name in ("kty", *_PUBLIC_MEMBERS[kty])}
    jwk["kid"] = kid or key.thumbprint()
    jwk["alg"] = _ALG_OF[kty]
    jwk["use"] = "sig"
    return jwk


def _check_identity(client_id: str, tenant: str, role: str) -> None:
    if not _CLIENT_ID.match(client_id):
        raise ClientRegistrationError("a client id is 1-128 letters, digits, '.', '_', ':' or '-'")
    if not _TENANT.match(tenant):
        raise ClientRegistrationError("a tenant is 1-64 letters, digits, '_' or '-'")
    if role not in {r.value for r in Role}:
        raise ClientRegistrationError(f"unknown role; expected one of {', '.join(r.value for r in Role)}")


def _check_bindings(
    role: Role, scopes: tuple[Scope, ...], patient: str | None, organization: str | None, fhir_user: str | None
) -> None:
    if not scopes:
        raise InvalidScopeError("a client needs at least one scope")
    if patient is not None and not _FHIR_ID.match(patient):
        raise ClientRegistrationError("a patient binding is a Patient logical id")
    if organization is not None and not _FHIR_ID.match(organization):
        raise ClientRegistrationError("an organization binding is an Organization logical id")
    if fhir_user is not None and not _REFERENCE.match(fhir_user):
        raise ClientRegistrationError("fhirUser is a relative reference such as Practitioner/123")
    if patient is None and (role is Role.PATIENT_APP or any(s.context == "patient" for s in scopes)):
        raise ClientRegistrationError("a patient app and patient/ scopes need a patient binding")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():  # created 0600 up front: SQLite gives its journal files the same mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        raise KeyStoreError("the auth database is accessible by group or others; expected mode 0600")
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(_SCHEMA)
    return conn


def _client(row: tuple[Any, ...]) -> Client:
    client_id, tenant, role, scope, jwks, patient, organization, fhir_user, source_system, created = row
    return Client(
        client_id, tenant, Role(role), scope, json.loads(jwks), patient, organization, fhir_user, source_system, created
    )


class ClientRegistry:
    """Registered clients and the assertion ids they have used, in one SQLite file."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = _connect(path)

    def add(
        self,
        client_id: str,
        tenant: str,
        role: str | Role,
        scope: str,
        *,
        public_key_pem: bytes | None = None,
        jwks: Mapping[str, Any] | None = None,
        patient: str | None = None,
        organization: str | None = None,
        fhir_user: str | None = None,
        source_system: str | None = None,
    ) -> Client:
        """Register a client with exactly one of a PEM public key or a JWKS.

        Raises ClientRegistrationError (bad role, key, identifier or binding), InvalidScopeError
        (malformed or empty scopes) and ClientExistsError (the client id is taken).
        """
        _check_identity(client_id, tenant, role)
        scopes = parse_scopes(scope)
        _check_bindings(Role(role), scopes, patient, organization, fhir_user)
        if (public_key_pem is None) == (jwks is None):
            raise ClientRegistrationError("register either a PEM public key or a JWKS")
        if public_key_pem is not None:
            keys = {"keys": [jwk_from_pem(public_key_pem)]}
        else:
            keys = jwks_from_document(jwks or {})
        created = int(self._clock())
        row: tuple[Any, ...] = (client_id, tenant, Role(role).value, " ".join(scope.split()), json.dumps(keys))
        row += (patient, organization, fhir_user, source_system, created)
        try:
            with self._lock:
                self._conn.execute(_INSERT, row)
        except sqlite3.IntegrityError:
            raise ClientExistsError("a client with this id is already registered") from None
        return _client(row)

    def get(self, client_id: str) -> Client | None:
        """The registered client, or None."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM clients WHERE client_id = ?",  # noqa: S608
                (client_id,),
            ).fetchone()
        return None if row is None else _client(row)

    def clients(self) -> Iterator[Client]:
        """Every registered client, by client id."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM clients ORDER BY client_id").fetchall()  # noqa: S608
        return (_client(row) for row in rows)

    def remember_jti(self, client_id: str, jti: str, exp: int) -> bool:
        """Record an assertion id until it expires. False when already seen (a replay)."""
        with self._lock:
            self._conn.execute("DELETE FROM seen_jti WHERE exp < ?", (int(self._clock()) - _JTI_GRACE_S,))
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO seen_jti (client_id, jti, exp) VALUES (?, ?, ?)", (client_id, jti, int(exp))
            )
        return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ClientRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
