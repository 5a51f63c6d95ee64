"""The authorization server: SMART Backend Services tokens, and the validation of every bearer token.

Clients authenticate with a signed JWT assertion (RFC 7523 ``private_key_jwt``,
RS384 or ES384 only) and receive a short-lived ES256 access token signed with
our key. ``authenticate`` turns a bearer token — ours, or one from a trusted
external OpenID Connect issuer — into a ``Principal``.

SecurityError
 ├── errors.AuthenticationError       a bearer token is refused (401 invalid_token)
 │    └── errors.InvalidClientError   the client assertion is refused (401 invalid_client)
 ├── errors.InvalidScopeError         malformed or wider than registered (invalid_scope)
 ├── InvalidRequestError              the token request is malformed (400 invalid_request)
 │    └── UnsupportedGrantTypeError   not client_credentials (400 unsupported_grant_type)
 └── AuthConfigError                  the auth settings are unusable (startup failure)

Error messages never carry a token or a claim value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from security.clients import ASSERTION_ALGS, JTI_MAX_LEN, Client, ClientRegistry, covered, parse_scopes
from security.config import AuthSettings, OidcIssuerSettings
from security.errors import AuthenticationError, InvalidClientError, InvalidScopeError, KeyStoreError, SecurityError
from security.principal import Principal, Role
from security.scopes import parse_scope
from security.secretfile import write_private

with warnings.catch_warnings():
    # authlib 1.9 deprecates authlib.jose for joserfc; its deprecate module installs an "always" filter on
    # import, so it is imported first and our "ignore" goes in front of it (both are undone on exit).
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.jose.errors import JoseError

log = structlog.get_logger("security.oauth")

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_ALG = "ES256"  # noqa: S105 (an algorithm name)
TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068): an access token is not mistaken for any other JWT we sign
EXTERNAL_ALGS = ("RS256", "RS384", "ES256", "ES384")
CLOCK_SKEW_S = 5
MAX_JWT_CHARS = 16_384
_ALG_OF = {"RSA": "RS384", "EC": "ES384"}
_FHIR_USER = re.compile(r"(?:^|/)(Practitioner|Patient)/([A-Za-z0-9\-.]{1,64})$")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class InvalidRequestError(SecurityError):
    code = "invalid_request"


class UnsupportedGrantTypeError(InvalidRequestError):
    code = "unsupported_grant_type"


class AuthConfigError(SecurityError):
    code = "auth-config"


def load_or_create_signing_key(path: Path) -> Any:
    """Our EC P-256 signing key (an authlib key), created 0600 on first start.

    Raises KeyStoreError when the file is exposed to group or others, unreadable or not a P-256 key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
        write_private(fresh, pem)
        try:
            os.link(fresh, path)  # atomic and never overwrites: concurrent first starts agree on one key
        except FileExistsError:
            pass
        finally:
            fresh.unlink()
    try:
        if path.stat().st_mode & 0o077:
            raise KeyStoreError("the token signing key is accessible by group or others; expected mode 0600")
        key = JsonWebKey.import_key(path.read_bytes())
    except (OSError, ValueError):
        raise KeyStoreError("the token signing key is unreadable") from None
    if key.kty != "EC" or key.public_only or key["crv"] != "P-256":
        raise KeyStoreError("the token signing key is not an EC P-256 private key")
    return key


def client_assertion(
    private_key_pem: bytes,
    client_id: str,
    token_url: str,
    kid: str | None = None,
    alg: str | None = None,
    lifetime_s: int = 240,
    *,
    now: float | None = None,
) -> str:
    """A signed client assertion (RFC 7523) for the token endpoint; kid defaults to the key's thumbprint.

    Raises InvalidClientError when the key is not a readable RSA or EC private key.
    """
    try:
        key = JsonWebKey.import_key(private_key_pem)
    except (ValueError, TypeError):
        raise InvalidClientError("the client key is not a readable PEM private key") from None
    if key.kty not in _ALG_OF or key.public_only:
        raise InvalidClientError("the client key must be an RSA or EC private key")
    issued = int(time.time() if now is None else now)
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "iat": issued, "exp": issued + lifetime_s}
    claims["jti"] = secrets.token_urlsafe(24)
    alg = alg or _ALG_OF[key.kty]
    header = {"alg": alg, "kid": kid or key.thumbprint(), "typ": "JWT"}
    return str(JsonWebToken([alg]).encode(header, claims, key, check=False).decode("ascii"))


def _verified(jwt: Any, token: str, load_key: Callable[..., Any], error: type[SecurityError]) -> dict[str, Any]:
    """Claims of a compact JWS once its signature checks out; anything else raises ``error``."""
    if not isinstance(token, str) or len(token) > MAX_JWT_CHARS or token.count(".") != 2:
        raise error("the token is not a compact JWS")  # 5 segments would be a JWE, which authlib would accept
    try:
        return dict(jwt.decode(token, load_key))
    except (JoseError, ValueError, TypeError) as exc:
        raise error(f"the token is refused ({type(exc).__name__})") from None


def _unverified_claims(token: str) -> dict[str, Any]:
    """The payload before any check: used only to pick the issuer (or client) whose key must verify it."""
    try:
        segment = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, binascii.Error):
        raise AuthenticationError("the access token is malformed") from None
    if not isinstance(claims, dict):
        raise AuthenticationError("the access token is malformed")
    return claims


def _numeric(value: object) -> TypeGuard[float]:
    # json.loads accepts NaN and Infinity; NaN compares False to everything and would pass every check.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_times(claims: Mapping[str, Any], now: float, error: type[SecurityError], max_ahead: float | None) -> None:
    exp = claims.get("exp")
    if not _numeric(exp):
        raise error("the token has no valid exp")
    if exp <= now - CLOCK_SKEW_S:
        raise error("the token has expired")
    if max_ahead is not None and exp > now + max_ahead:
        raise error("the token lives longer than allowed")
    for name in ("iat", "nbf"):
        value = claims.get(name, now)
        if not _numeric(value) or value > now + CLOCK_SKEW_S:
            raise error(f"the token's {name} is invalid or in the future")


def _audience_ok(aud: object, expected: str) -> bool:
    return aud == expected or (isinstance(aud, list) and expected in aud)


def _text(claims: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = claims.get(name)
    if (value is None and not required) or (isinstance(value, str) and value):
        return value
    raise AuthenticationError(f"the access token's {name} claim is missing or malformed")


class AuthorizationServer:
    """Issues access tokens to registered clients and authenticates bearer tokens."""

    def __init__(
        self,
        registry: ClientRegistry,
        signing_key_path: Path,
        settings: AuthSettings,
        token_url: str,
        issuer: str,
        clock: Callable[[], float] = time.time,
        *,
        audience: str | None = None,
    ) -> None:
        self.registry, self.settings, self.token_url, self.issuer = registry, settings, token_url, issuer
        self.audience = audience or issuer
        self.clock = clock
        self._key = load_or_create_signing_key(signing_key_path)
        self.kid = str(self._key.thumbprint())
        self._public = {**self._key.as_dict(is_private=False), "kid": self.kid, "alg": TOKEN_ALG, "use": "sig"}
        self._assertions = JsonWebToken(list(ASSERTION_ALGS))
        self._tokens = JsonWebToken([TOKEN_ALG])
        self._external = {s.issuer: ExternalIssuer(s, clock) for s in settings.external_issuers}
        if issuer in self._external:
            raise AuthConfigError("an external issuer cannot use this server's own issuer URL")

    def jwks(self) -> dict[str, Any]:
        """Our public signing keys, for ``jwks_uri``."""
        return {"keys": [dict(self._public)]}

    def smart_configuration(self, base_url: str) -> dict[str, Any]:
        """The ``/.well-known/smart-configuration`` document (jwks_uri is ``<base>/.well-known/jwks.json``)."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_url,
            "jwks_uri": f"{base_url.rstrip('/')}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
            "scopes_supported": ["system/*.cruds", "system/*.rs", "user/*.cruds", "user/*.rs", "patient/*.rs"],
            "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
        }

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token endpoint (client_credentials with a private_key_jwt assertion): the OAuth JSON response.

        Raises UnsupportedGrantTypeError, InvalidRequestError, InvalidClientError (the assertion is
        refused: signature, kid, iss/sub, aud, exp, replayed jti) and InvalidScopeError.
        """
        if form.get("grant_type") != "client_credentials":
            raise UnsupportedGrantTypeError("only grant_type=client_credentials is supported")
        if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
            raise InvalidClientError("authenticate with a private_key_jwt client assertion")
        if not isinstance(form.get("scope", ""), str):
            raise InvalidRequestError("scope must be a string")
        client = self._authenticate_client(form["client_assertion"], form.get("client_id"))
        requested = parse_scopes(form.get("scope", ""))
        if not covered(requested, parse_scopes(client.scope)):
            raise InvalidScopeError("the requested scopes are wider than the client's registration")
        return self._issue(client, " ".join(form.get("scope", "").split()) or client.scope)

    def _authenticate_client(self, assertion: str, client_id: str | None) -> Client:
        found: list[Client] = []

        def load_key(header: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
            iss = payload.get("iss")
            client = self.registry.get(iss) if isinstance(iss, str) else None
            jwk = client.key(header.get("kid")) if client is not None else None
            if client is None or jwk is None or jwk["alg"] != header.get("alg"):
                raise InvalidClientError("the assertion names no key registered for its client")
            found.append(client)
            return jwk

        claims = _verified(self._assertions, assertion, load_key, InvalidClientError)
        client = found[0]
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise InvalidClientError("the assertion's iss and sub must both be the client id")
        if client_id is not None and client_id != client.client_id:
            raise InvalidClientError("client_id does not match the assertion")
        if not _audience_ok(claims.get("aud"), self.token_url):
            raise InvalidClientError("the assertion's aud is not this token endpoint")
        _check_times(claims, self.clock(), InvalidClientError, self.settings.assertion_max_ttl_s)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= JTI_MAX_LEN:
            raise InvalidClientError("the assertion has no valid jti")
        if not self.registry.remember_jti(client.client_id, jti, int(claims["exp"])):
            raise InvalidClientError("the assertion was already used")
        return client

    def _issue(self, client: Client, scope: str) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "iat": now, "jti": secrets.token_hex(16)}
        claims |= {"exp": now + self.settings.token_ttl_s, "sub": client.client_id, "client_id": client.client_id}
        claims |= {"scope": scope, "tenant": client.tenant, "role": client.role.value}
        bound = {"patient": client.patient, "organization": client.organization, "fhirUser": client.fhir_user}
        bound["source_system"] = client.source_system
        claims |= {name: value for name, value in bound.items() if value is not None}
        header = {"alg": TOKEN_ALG, "kid": self.kid, "typ": TOKEN_TYPE}
        # check=False: authlib refuses claim values that look like SSNs or card numbers; an id may.
        token = self._tokens.encode(header, claims, self._key, check=False).decode("ascii")
        response = {"access_token": token, "token_type": "bearer", "expires_in": self.settings.token_ttl_s}
        response["scope"] = scope
        if client.patient is not None:
            response["patient"] = client.patient
        return response

    def authenticate(self, bearer: str) -> Principal:
        """The principal of a bearer token: ours (ES256, our kid) or from a configured OIDC issuer.

        Raises AuthenticationError for any token that is not verifiably valid (and AuthConfigError
        when a configured issuer's JWKS file has become unreadable).
        """
        if not isinstance(bearer, str) or len(bearer) > MAX_JWT_CHARS or bearer.count(".") != 2:
            raise AuthenticationError("the access token is not a compact JWS")
        issuer = _unverified_claims(bearer).get("iss")
        if issuer == self.issuer:
            return self._our_principal(bearer)
        external = self._external.get(issuer) if isinstance(issuer, str) else None
        if external is None:
            raise AuthenticationError("the access token's issuer is not trusted")
        return external.principal(bearer)

    def _our_principal(self, token: str) -> Principal:
        def load_key(header: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
            if header.get("kid") != self.kid or header.get("typ") != TOKEN_TYPE:
                raise AuthenticationError("the access token was not signed by this server")
            return self._public

        claims = _verified(self._tokens, token, load_key, AuthenticationError)
        if claims.get("iss") != self.issuer or claims.get("aud") != self.audience:
            raise AuthenticationError("the access token's issuer or audience is wrong")
        _check_times(claims, self.clock(), AuthenticationError, self.settings.token_ttl_s + CLOCK_SKEW_S)
        role = _text(claims, "role", required=True)
        if role not in {r.value for r in Role}:
            raise AuthenticationError("the access token's role is unknown")
        return Principal(
            client_id=str(_text(claims, "sub", required=True)),
            tenant=str(_text(claims, "tenant", required=True)),
            role=Role(role),
            scopes=tuple(str(_text(claims, "scope", required=True)).split()),
            patient=_text(claims, "patient"),
            fhir_user=_text(claims, "fhirUser"),
            organization=_text(claims, "organization"),
            source_system=_text(claims, "source_system"),
            token_id=_text(claims, "jti", required=True),
        )


class ExternalIssuer:
    """A trusted OpenID Connect issuer: its JWKS file (re-read when it changes) and the mapping of its claims.

    A JWKS URL is not fetched by the gateway (no outbound calls, no extra dependency): refresh the file instead.
    """

    def __init__(self, settings: OidcIssuerSettings, clock: Callable[[], float]) -> None:
        if settings.jwks_file is None or settings.jwks_url is not None:
            raise AuthConfigError("an external issuer needs jwks_file (jwks_url is not supported)")
        if settings.audience is None:
            log.warning("oidc_issuer_without_audience", issuer=settings.issuer)
        self.settings, self._jwks_file, self.clock = settings, settings.jwks_file, clock
        self._jwt = JsonWebToken(list(EXTERNAL_ALGS))
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._stamp: int | None = None

    def principal(self, token: str) -> Principal:
        """Verify the token with the issuer's keys and map its claims. Raises AuthenticationError."""
        claims = _verified(self._jwt, token, self._load_key, AuthenticationError)
        if claims.get("iss") != self.settings.issuer:
            raise AuthenticationError("the access token's issuer is wrong")
        if self.settings.audience is not None and not _audience_ok(claims.get("aud"), self.settings.audience):
            raise AuthenticationError("the access token's audience is wrong")
        _check_times(claims, self.clock(), AuthenticationError, None)
        match = _FHIR_USER.search(str(_text(claims, "fhirUser", required=True)))
        if match is None:
            raise AuthenticationError("the access token's fhirUser is neither a Practitioner nor a Patient")
        rtype, rid = match.groups()
        scope = claims.get("scope")
        clinician = rtype == "Practitioner"
        return Principal(
            client_id=str(_text(claims, "client_id") or _text(claims, "azp") or _text(claims, "sub", required=True)),
            tenant=self.settings.tenant,
            role=Role.CLINICIAN if clinician else Role.PATIENT_APP,
            scopes=tuple(s for s in scope.split() if _well_formed(s)) if isinstance(scope, str) else (),
            patient=None if clinician else (_fhir_id(claims, "patient", "Patient") or rid),
            fhir_user=f"{rtype}/{rid}",
            organization=_fhir_id(claims, "organization", "Organization") if clinician else None,
            token_id=_text(claims, "jti"),
        )

    def _load_key(self, header: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
        kid, alg, keys = header.get("kid"), header.get("alg"), self._current_keys()
        if kid is None and len(keys) == 1:
            kid = next(iter(keys))
        jwk = keys.get(kid) if isinstance(kid, str) else None
        if jwk is None or not isinstance(alg, str) or _ALG_OF[jwk["kty"]][:2] != alg[:2]:
            raise AuthenticationError("the access token names no usable key of its issuer")
        if jwk.get("alg") not in (None, alg):
            raise AuthenticationError("the access token's alg does not match its key")
        return jwk

    def _current_keys(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            try:
                stamp = self._jwks_file.stat().st_mtime_ns
                if stamp != self._stamp:
                    self._keys, self._stamp = _usable_keys(json.loads(self._jwks_file.read_bytes())), stamp
            except (OSError, ValueError):
                raise AuthConfigError("an external issuer's jwks_file is unreadable") from None
            return self._keys


def _usable_keys(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The public signing keys of an issuer's JWKS, by kid (private members and oct keys are dropped)."""
    members = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}
    keys: dict[str, dict[str, Any]] = {}
    for raw in doc.get("keys", []) if isinstance(doc.get("keys"), list) else []:
        if not isinstance(raw, dict) or raw.get("kty") not in members or raw.get("use", "sig") != "sig":
            continue
        jwk = {name: raw.get(name) for name in ("kty", *members[raw["kty"]])}
        try:
            kid = raw.get("kid") or JsonWebKey.import_key(jwk).thumbprint()
        except (ValueError, TypeError):
            continue  # a malformed key never verifies anything
        keys[str(kid)] = jwk | ({"alg": raw["alg"]} if isinstance(raw.get("alg"), str) else {})
    return keys


def _well_formed(scope: str) -> bool:
    try:
        parse_scope(scope)
    except InvalidScopeError:
        return False  # openid, fhirUser, launch/…: carry no resource permission
    return True


def _fhir_id(claims: Mapping[str, Any], name: str, resource_type: str) -> str | None:
    """A logical id from a claim holding ``id`` or ``Type/id``; a malformed one refuses the token."""
    value = _text(claims, name)
    if value is None:
        return None
    value = value.removeprefix(f"{resource_type}/")
    if not _FHIR_ID.match(value):
        raise AuthenticationError(f"the access token's {name} claim is malformed")
    return value
