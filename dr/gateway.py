"""The drill's gateway processes and its authenticated client.

A drill runs the real product: ``fhirlake serve`` over TLS on a free loopback port, serving
whichever region is active, and talks to it as a registered client would — an OAuth2 client with
a private-key JWT assertion and a client certificate from the data dir's CA (mTLS), one EMR
integration (writes and reads) and one operator (erasure). The clients are registered in the
active region's registry, which replication carries to the other region.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dr.errors import DrError
from dr.region import Region
from fhirlake.settings import Settings
from security.certs import CertPaths, init_ca_and_server, issue_client
from security.clients import ClientRegistry
from security.oauth import JWT_BEARER, client_assertion
from security.principal import Role

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """``fhirlake serve`` for the data dir in a child process (it serves the active region)."""

    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.origin = f"https://127.0.0.1:{self.port}"
        self._settings, self._log_path = settings, log_path
        # The product's default: TLS with client certificates, tokens issued for this origin.
        self._env = {**os.environ, **(env or {}), "FHIRLAKE_AUTH__ISSUER": self.origin, "FHIRLAKE_TLS__ENABLED": "true"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process; :meth:`wait_ready` polls until it answers."""
        log = self._log_path.open("ab")
        args = [sys.executable, "-m", "fhirlake.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--data-dir", str(self._settings.data_dir.resolve())]
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=self._env)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the region's compute is lost without any chance to flush."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: a graceful stop that writes every accepted row to the lake."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class Identity:
    client_id: str
    key_pem: bytes
    cert: Path
    cert_key: Path


def register_identity(settings: Settings, active: Region, role: Role, scope: str, label: str) -> Identity:
    """Register a drill client in ``active``'s registry with a fresh key and a CA-issued certificate."""
    tls_dir = settings.data_dir.resolve() / "tls"
    init_ca_and_server(tls_dir)
    client_id = f"dr-drill-{label}-{uuid.uuid4().hex[:8]}"
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    registry = ClientRegistry(active.auth_dir / "auth.db")
    try:
        registry.add(client_id, settings.tenant, role, scope, public_key_pem=public)
    finally:
        registry.close()
    out = settings.data_dir.resolve() / "dr" / "drill-clients"
    cert, cert_key = issue_client(tls_dir, client_id, out, days=1)
    return Identity(client_id, pem, cert, cert_key)


_MAX_THROTTLE_WAIT_S = 30.0


class DrillClient:
    """An authenticated HTTPS client of one gateway process."""

    def __init__(self, settings: Settings, identity: Identity, origin: str, timeout: float = 10.0) -> None:
        ca = CertPaths.under(settings.data_dir.resolve() / "tls").ca_cert
        self._identity, self.origin = identity, origin
        context = ssl.create_default_context(cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(identity.cert), str(identity.cert_key))  # mTLS: writes need it
        self._http = httpx.Client(base_url=origin, verify=context, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def login(self) -> None:
        """Get an access token (raises DrError when the token endpoint refuses)."""
        url = f"{self.origin}/auth/token"
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": client_assertion(self._identity.key_pem, self._identity.client_id, url),
        }
        reply = self._http.post("/auth/token", data=form)
        if reply.status_code != 200:
            raise DrError(f"the drill client could not log in: HTTP {reply.status_code}")
        self._token = str(reply.json()["access_token"])

    def request(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        if self._token is None:
            self.login()
        reply = self._send(method, path, body)
        if reply.status_code == 401:  # the token expired (tokens live 5 minutes): once more with a new one
            self.login()
            reply = self._send(method, path, body)
        waited = 0.0
        while reply.status_code == 429 and waited < _MAX_THROTTLE_WAIT_S:  # the gateway's rate limit: back off
            pause = min(float(reply.headers.get("retry-after", "1") or 1), _MAX_THROTTLE_WAIT_S - waited)
            time.sleep(pause)
            waited += pause
            reply = self._send(method, path, body)
        return reply

    def _send(self, method: str, path: str, body: bytes | None) -> httpx.Response:
        headers = {**FHIR_JSON, "Authorization": f"Bearer {self._token}"}
        return self._http.request(method, path, content=body, headers=headers)

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False


def wait_until(predicate: Any, timeout: float, pause: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (httpx.HTTPError, DrError):
            pass
        time.sleep(pause)
    return False
