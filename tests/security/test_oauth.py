"""SMART Backend Services: clients prove their key, get a short-lived token, and every forgery is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from security.clients import ClientExistsError, ClientRegistrationError
from security.config import OidcIssuerSettings
from security.errors import AuthenticationError, InvalidClientError, InvalidScopeError
from security.oauth import AuthorizationServer, UnsupportedGrantTypeError, client_assertion
from security.principal import Role
from tests.fixtures.oauth import (
    BASE_URL,
    ISSUER,
    TOKEN_URL,
    Clock,
    KeyPair,
    assertion_claims,
    generate_key,
    hs256_jwt,
    jwks_file,
    make_server,
    obtain_token,
    pem_of_jwk,
    register_client,
    sign_jwt,
    token_form,
    unsigned_jwt,
)

CLIENT = "backend-1"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> AuthorizationServer:
    return make_server(tmp_path / "data", clock)


@pytest.fixture(params=["RS384", "ES384"])
def client_key(request: pytest.FixtureRequest, server: AuthorizationServer) -> KeyPair:
    key = generate_key(request.param)
    register_client(server.registry, key, CLIENT, scope="system/Observation.cruds system/Patient.rs")
    return key


def _claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return claims


def _assertion(key: KeyPair, clock: Clock, **overrides: Any) -> str:
    return sign_jwt(key, {**assertion_claims(CLIENT, clock.now), **overrides})


# --- happy paths -------------------------------------------------------------------------------


def test_client_gets_a_short_lived_token_and_is_authenticated(
    server: AuthorizationServer, client_key: KeyPair, clock: Clock
) -> None:
    response = obtain_token(server, client_key, CLIENT)
    assert response["token_type"] == "bearer"
    assert response["expires_in"] <= 300
    assert response["scope"] == "system/Observation.cruds system/Patient.rs"
    claims = _claims_of(response["access_token"])
    assert claims["iss"] == ISSUER and claims["sub"] == CLIENT and claims["aud"] == ISSUER
    assert claims["exp"] - clock.now <= 300 and claims["tenant"] == "default" and claims["role"] == "emr-integration"

    principal = server.authenticate(response["access_token"])
    assert principal.client_id == CLIENT and principal.role is Role.EMR_INTEGRATION
    assert principal.scopes == ("system/Observation.cruds", "system/Patient.rs")
    assert principal.token_id == claims["jti"]


def test_registered_kid_is_the_rfc7638_thumbprint(server: AuthorizationServer, client_key: KeyPair) -> None:
    client = server.registry.get(CLIENT)
    assert client is not None
    assert client.kids == (client_key.kid,)
    # RFC 7638 §3.1 by hand: the required members, sorted, no whitespace, SHA-256, base64url.
    jwk = client_key.public_jwk()
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":")).encode()
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert client.kids == (expected,)


def test_narrower_scope_is_granted_as_requested(server: AuthorizationServer, client_key: KeyPair) -> None:
    response = obtain_token(server, client_key, CLIENT, scope="system/Observation.rs?category=laboratory")
    assert response["scope"] == "system/Observation.rs?category=laboratory"
    assert server.authenticate(response["access_token"]).scopes == ("system/Observation.rs?category=laboratory",)


def test_bound_patient_app_token_carries_its_patient(server: AuthorizationServer) -> None:
    key = generate_key("ES384")
    register_client(server.registry, key, "app-1", Role.PATIENT_APP, "patient/*.rs", patient="p-123")
    response = obtain_token(server, key, "app-1")
    assert response["patient"] == "p-123"
    principal = server.authenticate(response["access_token"])
    assert principal.role is Role.PATIENT_APP and principal.patient == "p-123"


def test_jwks_json_can_register_a_client(server: AuthorizationServer, clock: Clock) -> None:
    key = generate_key("RS384")
    server.registry.add(
        "jwks-client", "default", "emr-integration", "system/*.rs", jwks={"keys": [key.public_jwk(kid="k-2026")]}
    )
    assertion = sign_jwt(key, assertion_claims("jwks-client", clock.now), kid="k-2026")
    assert server.token(token_form(assertion))["scope"] == "system/*.rs"


def test_smart_configuration_and_jwks(server: AuthorizationServer) -> None:
    doc = server.smart_configuration(BASE_URL + "/")
    assert doc["token_endpoint"] == TOKEN_URL
    assert doc["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client-confidential-asymmetric" in doc["capabilities"]
    (key,) = server.jwks()["keys"]
    assert key["alg"] == "ES256" and key["kid"] == server.kid and "d" not in key


def test_state_files_are_private_and_the_key_survives_restart(tmp_path: Path, clock: Clock) -> None:
    first = make_server(tmp_path / "data", clock)
    for name in ("auth.db", "signing.key"):
        assert stat.S_IMODE((tmp_path / "data" / "auth" / name).stat().st_mode) == 0o600
    assert make_server(tmp_path / "data", clock).kid == first.kid


# --- client assertion attacks ------------------------------------------------------------------


def test_alg_none_assertion_is_refused(server: AuthorizationServer, client_key: KeyPair, clock: Clock) -> None:
    forged = unsigned_jwt(assertion_claims(CLIENT, clock.now), kid=client_key.kid)
    with pytest.raises(InvalidClientError, match="UnsupportedAlgorithm"):
        server.token(token_form(forged))


def test_hs256_with_public_key_as_secret_is_refused(
    server: AuthorizationServer, client_key: KeyPair, clock: Clock
) -> None:
    forged = hs256_jwt(assertion_claims(CLIENT, clock.now), client_key.public_pem, kid=client_key.kid)
    with pytest.raises(InvalidClientError, match="UnsupportedAlgorithm"):
        server.token(token_form(forged))


def test_rs256_assertion_is_refused(server: AuthorizationServer, clock: Clock) -> None:
    key = generate_key("RS384")
    register_client(server.registry, key, CLIENT)
    with pytest.raises(InvalidClientError, match="UnsupportedAlgorithm"):
        server.token(token_form(sign_jwt(key, assertion_claims(CLIENT, clock.now), alg="RS256")))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": 1_750_000_000 - 60}, id="expired"),
        pytest.param({"exp": 1_750_000_000 + 301}, id="exp-more-than-5-min-ahead"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"exp": float("nan")}, id="exp-nan"),  # NaN compares False: it would pass naive checks
        pytest.param({"aud": "https://elsewhere.test/token"}, id="wrong-aud"),
        pytest.param({"sub": "someone-else"}, id="iss-not-sub"),
        pytest.param({"jti": None}, id="no-jti"),
    ],
)
def test_bad_assertion_claims_are_refused(
    server: AuthorizationServer, client_key: KeyPair, clock: Clock, overrides: dict[str, Any]
) -> None:
    claims = {k: v for k, v in {**assertion_claims(CLIENT, clock.now), **overrides}.items() if v is not None}
    with pytest.raises(InvalidClientError):
        server.token(token_form(sign_jwt(client_key, claims)))


def test_unknown_kid_is_refused(server: AuthorizationServer, client_key: KeyPair, clock: Clock) -> None:
    with pytest.raises(InvalidClientError):
        server.token(token_form(sign_jwt(client_key, assertion_claims(CLIENT, clock.now), kid="not-registered")))


def test_key_of_another_client_is_refused(server: AuthorizationServer, client_key: KeyPair, clock: Clock) -> None:
    intruder = generate_key(client_key.alg)
    register_client(server.registry, intruder, "intruder")
    # Claims to be CLIENT, signed by a registered key that is not CLIENT's.
    with pytest.raises(InvalidClientError):
        server.token(token_form(sign_jwt(intruder, assertion_claims(CLIENT, clock.now))))


def test_replayed_jti_is_refused(server: AuthorizationServer, client_key: KeyPair, clock: Clock) -> None:
    assertion = _assertion(client_key, clock)
    server.token(token_form(assertion))
    with pytest.raises(InvalidClientError, match="already used"):
        server.token(token_form(assertion))


def test_unregistered_client_and_other_grants_are_refused(server: AuthorizationServer, clock: Clock) -> None:
    key = generate_key("ES384")
    with pytest.raises(InvalidClientError):
        server.token(token_form(client_assertion(key.private_pem, "nobody", TOKEN_URL, now=clock.now)))
    with pytest.raises(UnsupportedGrantTypeError):
        server.token({**token_form("x.y.z"), "grant_type": "password"})


# --- scopes ------------------------------------------------------------------------------------


def test_scope_wider_than_registration_is_refused(
    server: AuthorizationServer, client_key: KeyPair, clock: Clock
) -> None:
    for wider in ("system/*.rs", "system/Patient.cruds", "user/Observation.rs", "system/Observation.rs system/X.r"):
        with pytest.raises(InvalidScopeError):
            server.token(token_form(_assertion(client_key, clock), wider))


@pytest.mark.parametrize(
    "scope",
    [
        "system/Observation.sr",
        "system/Observation.rr",
        "system/observation.rs",
        "admin/*.rs",
        "system/*.rs?x",
        "openid",
    ],
)
def test_malformed_scope_is_refused_at_request(
    server: AuthorizationServer, client_key: KeyPair, clock: Clock, scope: str
) -> None:
    with pytest.raises(InvalidScopeError):
        server.token(token_form(_assertion(client_key, clock), scope))


@pytest.mark.parametrize("scope", ["system/*.sr", "system/Patient.readwrite", "system/*", "", "launch/patient"])
def test_malformed_scope_is_refused_at_registration(server: AuthorizationServer, scope: str) -> None:
    with pytest.raises(InvalidScopeError):
        register_client(server.registry, generate_key("ES384"), scope=scope)


def test_registration_refuses_bad_keys_roles_and_duplicates(server: AuthorizationServer) -> None:
    key = generate_key("ES384")
    for bad in (
        {"public_key_pem": key.private_pem},
        {"public_key_pem": generate_key("ES256").public_pem},
        {"jwks": {"keys": [key.public_jwk(d="AAAA")]}},
        {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
    ):
        with pytest.raises(ClientRegistrationError):
            server.registry.add("c", "default", "emr-integration", "system/*.rs", **bad)
    with pytest.raises(ClientRegistrationError):
        server.registry.add("c", "default", "root", "system/*.rs", public_key_pem=key.public_pem)
    with pytest.raises(ClientRegistrationError):  # patient scopes without a patient binding
        server.registry.add("c", "default", "emr-integration", "patient/*.rs", public_key_pem=key.public_pem)
    register_client(server.registry, key, "c")
    with pytest.raises(ClientExistsError):
        register_client(server.registry, key, "c")


# --- our access tokens -------------------------------------------------------------------------


@pytest.fixture
def access_token(server: AuthorizationServer) -> str:
    key = generate_key("ES384")
    register_client(server.registry, key, CLIENT, scope="system/Patient.rs")
    token: str = obtain_token(server, key, CLIENT)["access_token"]
    return token


def test_tampered_payload_is_refused(server: AuthorizationServer, access_token: str) -> None:
    header, _, signature = access_token.split(".")
    claims = {**_claims_of(access_token), "scope": "system/*.cruds", "role": "ops"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthenticationError, match="BadSignature"):
        server.authenticate(f"{header}.{payload}.{signature}")


def test_alg_none_token_is_refused(server: AuthorizationServer, access_token: str) -> None:
    with pytest.raises(AuthenticationError):
        server.authenticate(unsigned_jwt(_claims_of(access_token), kid=server.kid, typ="at+jwt"))


def test_hs256_token_with_our_public_key_is_refused(server: AuthorizationServer, access_token: str) -> None:
    (jwk,) = server.jwks()["keys"]
    for secret in (pem_of_jwk(jwk), json.dumps(jwk).encode()):
        forged = hs256_jwt(_claims_of(access_token), secret, kid=server.kid, typ="at+jwt")
        with pytest.raises(AuthenticationError):
            server.authenticate(forged)


def test_expired_token_is_refused(server: AuthorizationServer, access_token: str, clock: Clock) -> None:
    clock.now += 290
    assert server.authenticate(access_token).client_id == CLIENT
    clock.now += 20
    with pytest.raises(AuthenticationError, match="expired"):
        server.authenticate(access_token)


def test_token_of_another_issuer_or_key_is_refused(tmp_path: Path, server: AuthorizationServer, clock: Clock) -> None:
    other = make_server(tmp_path / "other", clock)  # same issuer URL, a different signing key
    key = generate_key("ES384")
    register_client(other.registry, key, CLIENT)
    with pytest.raises(AuthenticationError):
        server.authenticate(obtain_token(other, key, CLIENT)["access_token"])
    rogue = generate_key("ES256")  # our issuer claimed, our kid named, signed with another key
    claims = {"iss": ISSUER, "aud": ISSUER, "sub": CLIENT, "exp": clock.now + 60, "tenant": "default", "role": "ops"}
    with pytest.raises(AuthenticationError):
        server.authenticate(
            sign_jwt(rogue, {**claims, "scope": "system/*.cruds", "jti": "j"}, kid=server.kid, typ="at+jwt")
        )
    with pytest.raises(AuthenticationError, match="not trusted"):
        server.authenticate(sign_jwt(rogue, {**claims, "iss": "https://evil.test"}))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b.c.d.e", "e30.e30.", "x" * 20_000])
def test_garbage_bearer_is_refused(server: AuthorizationServer, garbage: str) -> None:
    with pytest.raises(AuthenticationError):
        server.authenticate(garbage)


# --- external OpenID Connect issuer ------------------------------------------------------------

IDP = "https://idp.example.org"


@pytest.fixture
def idp_key() -> KeyPair:
    return generate_key("RS256")


@pytest.fixture
def idp_server(tmp_path: Path, clock: Clock, idp_key: KeyPair) -> AuthorizationServer:
    jwks = jwks_file(tmp_path / "idp-jwks.json", idp_key)
    issuer = OidcIssuerSettings(issuer=IDP, jwks_file=jwks, audience=BASE_URL, tenant="hospital-a")
    return make_server(tmp_path / "data", clock, [issuer])


def _idp_claims(clock: Clock, **extra: Any) -> dict[str, Any]:
    return {"iss": IDP, "aud": BASE_URL, "sub": "u-1", "azp": "ehr-app", "exp": clock.now + 300, **extra}


def test_oidc_practitioner_maps_to_clinician(idp_server: AuthorizationServer, idp_key: KeyPair, clock: Clock) -> None:
    claims = _idp_claims(
        clock,
        fhirUser="https://ehr.example.org/fhir/Practitioner/pr-7",
        organization="Organization/org-3",
        scope="openid fhirUser user/Observation.rs",
    )
    principal = idp_server.authenticate(sign_jwt(idp_key, claims))
    assert principal.role is Role.CLINICIAN and principal.tenant == "hospital-a"
    assert principal.fhir_user == "Practitioner/pr-7" and principal.organization == "org-3"
    assert principal.scopes == ("user/Observation.rs",) and principal.client_id == "ehr-app"
    assert principal.patient is None


def test_oidc_patient_maps_to_patient_app(idp_server: AuthorizationServer, idp_key: KeyPair, clock: Clock) -> None:
    own = idp_server.authenticate(sign_jwt(idp_key, _idp_claims(clock, fhirUser="Patient/p-9", scope="patient/*.rs")))
    assert own.role is Role.PATIENT_APP and own.patient == "p-9" and own.scopes == ("patient/*.rs",)
    launched = idp_server.authenticate(sign_jwt(idp_key, _idp_claims(clock, fhirUser="Patient/p-9", patient="p-10")))
    assert launched.patient == "p-10"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"fhirUser": "RelatedPerson/r-1"}, id="other-fhir-user"),
        pytest.param({}, id="no-fhir-user"),
        pytest.param({"fhirUser": "Practitioner/pr-7", "aud": "https://other.test"}, id="wrong-aud"),
        pytest.param({"fhirUser": "Practitioner/pr-7", "exp": 1_750_000_000 - 60}, id="expired"),
        pytest.param({"fhirUser": "Practitioner/pr-7", "exp": float("nan")}, id="exp-nan"),
        pytest.param({"fhirUser": "Patient/p-9", "patient": "not an id"}, id="malformed-patient"),
    ],
)
def test_oidc_tokens_outside_the_mapping_are_refused(
    idp_server: AuthorizationServer, idp_key: KeyPair, clock: Clock, extra: dict[str, Any]
) -> None:
    with pytest.raises(AuthenticationError):
        idp_server.authenticate(sign_jwt(idp_key, _idp_claims(clock, **extra)))


def test_oidc_token_not_signed_by_the_issuer_is_refused(idp_server: AuthorizationServer, clock: Clock) -> None:
    stranger = generate_key("RS256")
    claims = _idp_claims(clock, fhirUser="Practitioner/pr-7")
    with pytest.raises(AuthenticationError):
        idp_server.authenticate(sign_jwt(stranger, claims))
    with pytest.raises(AuthenticationError, match="not trusted"):  # an issuer nobody configured
        idp_server.authenticate(sign_jwt(stranger, {**claims, "iss": "https://unknown-idp.test"}))


def test_oidc_hs256_with_the_issuer_public_key_is_refused(
    idp_server: AuthorizationServer, idp_key: KeyPair, clock: Clock
) -> None:
    forged = hs256_jwt(_idp_claims(clock, fhirUser="Practitioner/pr-7"), idp_key.public_pem, kid=idp_key.kid)
    with pytest.raises(AuthenticationError):
        idp_server.authenticate(forged)


def test_errors_do_not_echo_tokens_or_claims(server: AuthorizationServer, client_key: KeyPair, clock: Clock) -> None:
    secret_sub = "canary-ssn-123-45-6789"
    for attempt in (
        lambda: server.token(token_form(_assertion(client_key, clock, sub=secret_sub))),
        lambda: server.authenticate(sign_jwt(client_key, {"iss": secret_sub, "exp": clock.now + 60})),
    ):
        with pytest.raises((InvalidClientError, AuthenticationError)) as raised:
            attempt()
        assert secret_sub not in str(raised.value)


def test_oidc_jwks_file_is_reread_after_rotation(
    tmp_path: Path, idp_server: AuthorizationServer, idp_key: KeyPair, clock: Clock
) -> None:
    rotated = generate_key("ES384")
    claims = _idp_claims(clock, fhirUser="Practitioner/pr-7")
    with pytest.raises(AuthenticationError):
        idp_server.authenticate(sign_jwt(rotated, claims))
    jwks = jwks_file(tmp_path / "idp-jwks.json", idp_key, rotated)
    os.utime(jwks, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))  # a visibly newer file on coarse clocks
    assert idp_server.authenticate(sign_jwt(rotated, claims)).fhir_user == "Practitioner/pr-7"
