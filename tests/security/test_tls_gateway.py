"""The real gateway over TLS: mTLS for writes, tokens for everything, old protocols and foreign certificates refused."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from security.certs import init_ca, issue_client
from security.principal import Role
from tests.fixtures.identity import login, register
from tests.fixtures.tls import client_context, legacy_client_context

PATIENT = orjson.dumps({"resourceType": "Patient", "name": [{"family": "Tls"}]})
FHIR = {"Content-Type": "application/fhir+json"}


def _handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """None when the handshake (and a first read) succeeds, else the reason."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = tls.recv(64)  # TLS 1.3 reports a refused client certificate only here
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return type(exc).__name__
    return None if answer.startswith(b"HTTP/1.1 200") else "no answer"


@pytest.mark.slow
def test_gateway_serves_tls_with_mtls_for_writes(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(tls=True)
    server.start()
    data_dir, ca = server.data_dir, server.data_dir / "tls" / "ca.pem"
    writer = register(data_dir, Role.EMR_INTEGRATION, "system/*.cruds")
    cert = issue_client(data_dir / "tls", writer.client_id, tmp_path / "writer")
    with (
        httpx.Client(verify=client_context(ca, cert), timeout=30) as mtls,
        httpx.Client(verify=client_context(ca), timeout=30) as plain,
    ):
        login(mtls, writer, f"{server.origin}/auth/token")
        auth = {"Authorization": f"Bearer {writer.token}"}
        created = mtls.post(f"{server.base}/Patient", content=PATIENT, headers=FHIR | auth)
        assert created.status_code == 201, created.text
        # The same token without the client certificate may read, never write.
        assert plain.post(f"{server.base}/Patient", content=PATIENT, headers=FHIR | auth).status_code == 403
        assert plain.get(f"{server.base}/Patient/{created.json()['id']}", headers=auth).status_code == 200
        assert plain.get(f"{server.base}/Patient/{created.json()['id']}").status_code == 401
        # A certificate header from a client that is not a trusted proxy is ignored.
        forged = {"x-client-cert": "-----BEGIN CERTIFICATE-----"}
        assert plain.post(f"{server.base}/Patient", content=PATIENT, headers=FHIR | auth | forged).status_code == 403

    assert _handshake(server.port, client_context(ca, cert)) is None
    assert _handshake(server.port, client_context(ca, version=ssl.TLSVersion.TLSv1_2)) is None
    other_ca = tmp_path / "other-ca"
    init_ca(other_ca)
    stranger = issue_client(other_ca, writer.client_id, tmp_path / "stranger")
    assert _handshake(server.port, client_context(ca, stranger)) is not None
    expired = issue_client(data_dir / "tls", "expired", tmp_path / "expired", not_before=_ago(40), not_after=_ago(10))
    assert _handshake(server.port, client_context(ca, expired)) is not None
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        assert _handshake(server.port, legacy_client_context(ca, version)) is not None


def _ago(days: int) -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
