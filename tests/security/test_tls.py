"""HTTPS with optional client certificates: real handshakes against a real uvicorn server.

A certificate from our CA identifies the client to the app; no certificate still connects
(token-only clients); any other certificate, and TLS below 1.2, never completes a request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pickle
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from structlog.testing import capture_logs

from fhirlake import certs_cli
from fhirlake.settings import Settings
from fhirlake.tls_serve import uvicorn_tls_options
from security.certs import CertificateError, init_ca_and_server, issue_client
from security.config import TlsSettings
from security.tls import (
    CLIENT_CERT_KEY,
    PEER_KEY,
    ClientCert,
    ClientCertError,
    client_cert_from_scope,
    from_der,
    from_peercert,
    server_context,
)
from tests.fixtures.tls import (
    CERT_HEADER,
    TlsWorld,
    client_context,
    get,
    handshake,
    legacy_client_context,
    permissive_server_context,
    tls_port_fixture,  # noqa: F401  (provides the tls_port fixture)
    tls_world_fixture,  # noqa: F401  (provides the tls_world fixture)
)

REFUSED = (ssl.SSLError, ConnectionError)
LEGACY = [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1]
MODERN = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", MODERN, ids=lambda v: v.name)
def test_client_certificate_from_our_ca_identifies_the_client(
    tls_world: TlsWorld, tls_port: int, version: ssl.TLSVersion
) -> None:
    reply = get(tls_port, client_context(tls_world.local.ca_cert, tls_world.client, version))
    assert reply.version == version.name.replace("_", ".")
    assert (reply.status, reply.body) == (200, {"subject": "CN=lab-feed", "cn": "lab-feed"})


@pytest.mark.parametrize("version", MODERN, ids=lambda v: v.name)
def test_client_without_certificate_connects_without_identity(
    tls_world: TlsWorld, tls_port: int, version: ssl.TLSVersion
) -> None:
    reply = get(tls_port, client_context(tls_world.local.ca_cert, None, version))
    assert (reply.status, reply.body["subject"]) == (200, None)


def test_every_request_of_a_keep_alive_connection_carries_the_certificate(tls_world: TlsWorld, tls_port: int) -> None:
    with httpx.Client(verify=client_context(tls_world.local.ca_cert, tls_world.client)) as client:
        cns = [client.get(f"https://localhost:{tls_port}/").json()["cn"] for _ in range(3)]
    assert cns == ["lab-feed"] * 3


def _bad_certs(world: TlsWorld) -> dict[str, tuple[Path, Path]]:
    return {
        "foreign": world.foreign,
        "expired": world.expired,
        "server-cert-as-client": (world.local.server_cert, world.local.server_key),  # serverAuth only
    }


@pytest.mark.parametrize("kind", ["foreign", "expired", "server-cert-as-client"])
@pytest.mark.parametrize("version", MODERN, ids=lambda v: v.name)
def test_bad_client_certificate_is_refused_in_the_handshake(
    tls_world: TlsWorld, tls_port: int, kind: str, version: ssl.TLSVersion
) -> None:
    with pytest.raises(REFUSED):
        get(tls_port, client_context(tls_world.local.ca_cert, _bad_certs(tls_world)[kind], version))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("foreign", "unable to get local issuer certificate"),
        ("expired", "certificate has expired"),
        ("server-cert-as-client", "unsuitable certificate purpose"),
    ],
)
def test_server_context_refuses_for_the_right_reason(tls_world: TlsWorld, kind: str, reason: str) -> None:
    local = tls_world.local
    server = server_context(local.server_cert, local.server_key, local.ca_cert)
    client = client_context(local.ca_cert, _bad_certs(tls_world)[kind])
    assert handshake(server, client) == (None, reason)
    assert handshake(server, client_context(local.ca_cert, tls_world.client)) == ("TLSv1.3", None)


@pytest.mark.parametrize("version", LEGACY, ids=lambda v: v.name)
def test_tls_below_1_2_is_refused(tls_world: TlsWorld, tls_port: int, version: ssl.TLSVersion) -> None:
    client = legacy_client_context(tls_world.local.ca_cert, version)
    with pytest.raises(REFUSED):
        get(tls_port, client)
    local = tls_world.local
    server = server_context(local.server_cert, local.server_key, local.ca_cert)
    assert handshake(server, client) == (None, "UNSUPPORTED_PROTOCOL")


@pytest.mark.parametrize("version", LEGACY, ids=lambda v: v.name)
def test_the_legacy_client_is_real(tls_world: TlsWorld, version: ssl.TLSVersion) -> None:
    """Control: the same legacy client completes a handshake with a permissive server on this OpenSSL."""
    client = legacy_client_context(tls_world.local.ca_cert, version)
    permissive = permissive_server_context(tls_world.local.server_cert, tls_world.local.server_key)
    negotiated, _ = handshake(permissive, client)
    if negotiated is None:
        pytest.skip(f"this OpenSSL refuses {version.name} even when allowed; the refusal test proves less here")
    assert negotiated == version.name.replace("_", ".")


def test_uvicorn_builds_our_context(tls_world: TlsWorld) -> None:
    options = uvicorn_tls_options(tls_world.settings)
    assert pickle.loads(pickle.dumps(options)) == options  # --workers N sends the config to child processes
    config = uvicorn.Config(lambda *_: None, **options)
    config.load()
    assert config.ssl is not None
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.ssl.verify_mode == ssl.CERT_OPTIONAL
    names = [cipher["name"] for cipher in config.ssl.get_ciphers()]
    assert names and all("GCM" in name or "CHACHA20" in name for name in names)


def test_peercert_dict_and_der_describe_the_same_certificate(tls_world: TlsWorld, tls_port: int) -> None:
    ctx = client_context(tls_world.local.ca_cert)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port)), server_hostname="localhost") as sock:
        as_dict, as_der = sock.getpeercert(), sock.getpeercert(binary_form=True)
    assert as_dict is not None
    assert as_der is not None
    assert from_peercert(as_dict) == from_der(as_der)
    assert from_der(as_der).common_name == "localhost"


# --- the trusted-proxy header ---------------------------------------------------------------


def _scope(tls_world: TlsWorld, cert: tuple[Path, Path] | None, client: str, **extensions: Any) -> dict[str, Any]:
    headers = [(CERT_HEADER.encode(), quote(cert[0].read_text()).encode())] if cert else []
    return {"type": "http", "client": (client, 50000), "headers": headers, "extensions": extensions}


def _from_scope(tls_world: TlsWorld, scope: dict[str, Any]) -> ClientCert | None:
    return client_cert_from_scope(scope, tls_world.settings.tls, tls_world.local.ca_cert.read_bytes())


def test_proxy_header_from_a_trusted_address_is_accepted(tls_world: TlsWorld) -> None:
    cert = _from_scope(tls_world, _scope(tls_world, tls_world.client, "127.0.0.1"))
    assert cert is not None
    assert (cert.subject, cert.common_name) == ("CN=lab-feed", "lab-feed")
    assert cert.not_after > dt.datetime.now(dt.UTC)


def test_proxy_header_from_an_untrusted_address_is_ignored(tls_world: TlsWorld) -> None:
    assert _from_scope(tls_world, _scope(tls_world, tls_world.client, "10.9.9.9")) is None
    # uvicorn's proxy-header middleware may rewrite "client"; the transport peer decides.
    forged = _scope(tls_world, tls_world.client, "127.0.0.1", **{PEER_KEY: ("10.9.9.9", 4242)})
    assert _from_scope(tls_world, forged) is None


@pytest.mark.parametrize("kind", ["foreign", "expired"])
def test_proxy_header_with_a_bad_certificate_is_rejected(tls_world: TlsWorld, kind: str) -> None:
    cert = tls_world.foreign if kind == "foreign" else tls_world.expired
    with pytest.raises(ClientCertError):
        _from_scope(tls_world, _scope(tls_world, cert, "127.0.0.1"))


def test_proxy_header_sent_twice_is_rejected(tls_world: TlsWorld) -> None:
    scope = _scope(tls_world, tls_world.client, "127.0.0.1")
    scope["headers"] = scope["headers"] * 2
    with pytest.raises(ClientCertError):
        _from_scope(tls_world, scope)


def test_handshake_certificate_wins_over_header(tls_world: TlsWorld) -> None:
    mine = ClientCert("CN=direct", "direct", "CN=ca", dt.datetime.now(dt.UTC))
    scope = _scope(tls_world, tls_world.client, "127.0.0.1", **{CLIENT_CERT_KEY: mine})
    assert _from_scope(tls_world, scope) == mine


def test_proxy_header_through_the_real_server(tls_world: TlsWorld, tls_port: int) -> None:
    ctx = client_context(tls_world.local.ca_cert)
    good = get(tls_port, ctx, {CERT_HEADER: quote(tls_world.client[0].read_text())})
    bad = get(tls_port, ctx, {CERT_HEADER: quote(tls_world.foreign[0].read_text())})
    assert (good.status, good.body["cn"]) == (200, "lab-feed")
    assert (bad.status, bad.body) == (403, {"error": "client-certificate"})


# --- certificates on disk and the CLI -------------------------------------------------------


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir")


def _run_cli(tmp_path: Path, *argv: str) -> dict[str, str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    certs_cli.register(sub, _add_data_dir)
    args = parser.parse_args(argv)
    printed: list[dict[str, str]] = []
    args.settings_of = lambda a: Settings(data_dir=Path(a.data_dir))
    args.print = printed.append
    assert args.func(args) == 0
    return printed[0]


def test_certs_cli_init_and_issue_client(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    first = _run_cli(tmp_path, "certs", "init", "--data-dir", data)
    ca_before = Path(first["ca"]).read_bytes()
    again = _run_cli(tmp_path, "certs", "init", "--hostname", "fhir.example.org", "--data-dir", data)
    assert Path(again["ca"]).read_bytes() == ca_before  # the CA is never replaced
    issued = _run_cli(
        tmp_path,
        "certs",
        "issue-client",
        "--name",
        "lab-feed",
        "--out",
        str(tmp_path / "c"),
        "--days",
        "30",
        "--data-dir",
        data,
    )
    assert issued["subject"] == "CN=lab-feed"
    for key in (first["ca_key"], first["server_key"], issued["key"]):
        assert Path(key).stat().st_mode & 0o777 == 0o600
    with pytest.raises(CertificateError, match="refusing to overwrite"):
        _run_cli(
            tmp_path, "certs", "issue-client", "--name", "lab-feed", "--out", str(tmp_path / "c"), "--data-dir", data
        )


def test_server_certificate_names_and_renewal(tmp_path: Path) -> None:
    paths = init_ca_and_server(tmp_path, ["fhir.example.org", "10.0.0.7"])
    pem = paths.server_cert.read_bytes()
    assert init_ca_and_server(tmp_path).server_cert.read_bytes() == pem  # no names: keep the current one
    assert init_ca_and_server(tmp_path, ["10.0.0.7", "fhir.example.org"]).server_cert.read_bytes() == pem
    assert init_ca_and_server(tmp_path, ["other.example.org"]).server_cert.read_bytes() != pem


def test_plain_http_is_loud(tmp_path: Path) -> None:
    with capture_logs() as logs:
        options = uvicorn_tls_options(Settings(data_dir=tmp_path, tls=TlsSettings(enabled=False)))
    assert options == {}
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["plain_http_development_mode"]
    assert not (tmp_path / "tls").exists()


def test_issue_client_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="local CA is missing"):
        issue_client(tmp_path / "nothing", "x", tmp_path / "out")
