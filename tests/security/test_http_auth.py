"""Authentication through the HTTP stack: every route protected, token attacks refused with no data."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from authlib.jose import JsonWebKey, JsonWebToken
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from gateway.auth import PUBLIC_ROUTES
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, container_of
from tests.fixtures.identity import register, token_form
from tests.fixtures.oauth import assertion_claims, generate_key, hs256_jwt, sign_jwt, unsigned_jwt

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NO_CREDENTIALS = {"Authorization": "", "x-client-cert": ""}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, including routers it includes (lazily, in new FastAPI)."""
    out: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                out.extend((method, prefix + route.path) for method in sorted(route.methods))
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes, prefix + (getattr(route.include_context, "prefix", "") or ""))

    walk(client.app.routes, "")  # type: ignore[attr-defined]
    return out


def test_every_route_needs_a_token_except_the_public_ones(client: TestClient) -> None:
    routes = _routes(client)
    assert set(routes) >= PUBLIC_ROUTES, "a public route listed that does not exist"
    protected = [r for r in routes if r not in PUBLIC_ROUTES]
    assert len(protected) >= 10
    for method, path in protected:
        url = path.replace("{rtype}", "Patient").replace("{rid}", "x").replace("{vid}", "1")
        reply = client.request(method, url, headers=NO_CREDENTIALS, content=b"{}")
        assert reply.status_code == 401, (method, path, reply.status_code)
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json()["resourceType"] == "OperationOutcome"
    for method, path in PUBLIC_ROUTES - {("POST", "/auth/token")}:
        assert client.request(method, path, headers=NO_CREDENTIALS).status_code == 200, path


def test_smart_discovery_and_jwks(client: TestClient) -> None:
    config = client.get("/fhir/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == TOKEN_URL
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert client.get("/.well-known/jwks.json").json()["keys"][0]["kty"] == "EC"


@pytest.fixture
def registered(client: TestClient) -> Any:
    data_dir = container_of(client).settings.data_dir
    return register(data_dir, Role.EMR_INTEGRATION, "system/Patient.rs", client_id=f"attack-{time.time_ns()}")


def _post_token(client: TestClient, assertion: str, scope: str | None = None) -> Any:
    form = token_form_for(assertion, scope)
    return client.post("/auth/token", data=form, headers=FORM)


def token_form_for(assertion: str, scope: str | None) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    if scope is not None:
        form["scope"] = scope
    return form


def test_honest_assertion_gets_a_short_lived_token(client: TestClient, registered: Any) -> None:
    reply = client.post("/auth/token", data=token_form(registered, TOKEN_URL), headers=FORM)
    assert reply.status_code == 200, reply.text
    assert reply.json()["expires_in"] <= 300
    assert reply.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "attack",
    ["alg-none", "hs256-with-public-key", "es256", "expired", "too-long", "wrong-aud", "iss-not-sub", "unknown-kid"],
)
def test_forged_or_stale_assertions_are_refused(client: TestClient, registered: Any, attack: str) -> None:
    now = time.time()
    claims = assertion_claims(registered.client_id, now, aud=TOKEN_URL)
    key = registered.key
    if attack == "alg-none":
        assertion = unsigned_jwt(claims, kid=key.kid)
    elif attack == "hs256-with-public-key":
        assertion = hs256_jwt(claims, key.public_pem, kid=key.kid)
    elif attack == "es256":  # a well-formed signature with an algorithm the server does not accept
        assertion = sign_jwt(generate_key("ES256"), claims, kid=key.kid)
    elif attack == "expired":
        assertion = sign_jwt(key, claims | {"iat": int(now) - 900, "exp": int(now) - 600})
    elif attack == "too-long":
        assertion = sign_jwt(key, claims | {"exp": int(now) + 3600})
    elif attack == "wrong-aud":
        assertion = sign_jwt(key, claims | {"aud": "https://elsewhere.example/token"})
    elif attack == "iss-not-sub":
        assertion = sign_jwt(key, claims | {"iss": "someone-else"})
    else:
        assertion = sign_jwt(key, claims, kid="not-a-registered-kid")
    reply = _post_token(client, assertion)
    assert reply.status_code == 401, (attack, reply.text)
    assert reply.json() == {"error": "invalid_client"}


def test_a_replayed_assertion_is_refused(client: TestClient, registered: Any) -> None:
    assertion = sign_jwt(registered.key, assertion_claims(registered.client_id, time.time(), aud=TOKEN_URL))
    assert _post_token(client, assertion).status_code == 200
    assert _post_token(client, assertion).status_code == 401


def test_a_scope_wider_than_the_registration_is_refused(client: TestClient, registered: Any) -> None:
    wider = sign_jwt(registered.key, assertion_claims(registered.client_id, time.time(), aud=TOKEN_URL))
    assert _post_token(client, wider, "system/*.cruds").status_code == 403
    malformed = sign_jwt(registered.key, assertion_claims(registered.client_id, time.time(), aud=TOKEN_URL))
    assert _post_token(client, malformed, "system/Patient.sr").status_code == 403


def _server_key(client: TestClient) -> Any:
    return JsonWebKey.import_key((container_of(client).settings.data_dir / "auth" / "signing.key").read_bytes())


@pytest.mark.parametrize("attack", ["alg-none", "hs256-with-jwks-key", "expired", "wrong-issuer", "tampered"])
def test_forged_access_tokens_get_401_and_no_data(client: TestClient, attack: str) -> None:
    patient = client.post(
        "/fhir/Patient", content=orjson.dumps({"resourceType": "Patient", "name": [{"family": "Zed"}]})
    )
    assert patient.status_code == 201
    jwks = client.get("/.well-known/jwks.json").json()["keys"][0]
    now = int(time.time())
    claims = {
        "iss": "http://testserver",
        "aud": "http://testserver",
        "sub": "forger",
        "tenant": "default",
        "role": "emr-integration",
        "scope": "system/*.cruds",
        "iat": now,
        "exp": now + 120,
        "jti": "x1",
    }
    header = {"alg": "ES256", "kid": jwks["kid"], "typ": "at+jwt"}
    if attack == "alg-none":
        token = unsigned_jwt(claims, kid=jwks["kid"], typ="at+jwt")
    elif attack == "hs256-with-jwks-key":
        public = JsonWebKey.import_key(jwks).as_pem(is_private=False)
        token = hs256_jwt(claims, public, kid=jwks["kid"], typ="at+jwt")
    else:
        if attack == "expired":
            claims |= {"iat": now - 900, "exp": now - 600}
        if attack == "wrong-issuer":
            claims |= {"iss": "https://evil.example"}
        token = JsonWebToken(["ES256"]).encode(header, claims, _server_key(client)).decode()
        if attack == "tampered":
            head, body, sig = token.split(".")
            token = ".".join((head, body[:-2] + ("AA" if body[-2:] != "AA" else "BB"), sig))
    reply = client.get(f"/fhir/Patient/{patient.json()['id']}", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 401, (attack, reply.text)
    assert "Zed" not in reply.text


def test_external_oidc_tokens_for_a_clinician_and_a_patient_app(tmp_path: Any) -> None:
    from security.config import OidcIssuerSettings
    from tests.fixtures.app import make_settings, open_client
    from tests.fixtures.oauth import jwks_file

    issuer_key = generate_key("RS384")
    issuer = OidcIssuerSettings(
        issuer="https://idp.hospital.example",
        jwks_file=jwks_file(tmp_path / "jwks.json", issuer_key),
        audience="fhirlake",
    )
    settings = make_settings(tmp_path / "data")
    settings.auth.external_issuers = [issuer]
    with open_client(settings) as client:
        org = client.post("/fhir/Organization", content=orjson.dumps({"resourceType": "Organization"})).json()["id"]
        mine = {"resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{org}"}}
        patient = client.post("/fhir/Patient", content=orjson.dumps(mine)).json()["id"]
        other = client.post("/fhir/Patient", content=orjson.dumps({"resourceType": "Patient"})).json()["id"]
        now = int(time.time())
        base = {"iss": issuer.issuer, "aud": "fhirlake", "iat": now, "exp": now + 300, "sub": "u1"}

        def bearer(**claims: Any) -> dict[str, str]:
            token = sign_jwt(issuer_key, base | claims)
            return {"Authorization": f"Bearer {token}", "x-client-cert": ""}

        doctor = bearer(fhirUser="Practitioner/d1", organization=org, scope="openid fhirUser user/*.rs")
        assert client.get(f"/fhir/Patient/{patient}", headers=doctor).status_code == 200
        assert client.get(f"/fhir/Patient/{other}", headers=doctor).status_code == 404
        app = bearer(fhirUser=f"Patient/{patient}", patient=patient, scope="openid launch/patient patient/*.rs")
        assert client.get(f"/fhir/Patient/{patient}", headers=app).status_code == 200
        assert client.get(f"/fhir/Patient/{other}", headers=app).status_code == 404
        assert client.get("/fhir/Patient", headers=app).json()["total"] == 1
        stranger = generate_key("RS384")
        forged = sign_jwt(stranger, base | {"fhirUser": "Practitioner/d1", "scope": "user/*.rs"}, kid=issuer_key.kid)
        assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
