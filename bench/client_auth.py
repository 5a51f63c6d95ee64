"""The benchmark's client is a real EMR integration: client certificate (mTLS), private_key_jwt, bearer token."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from security.certs import issue_client
from security.clients import ClientRegistry
from security.oauth import JWT_BEARER, client_assertion
from security.principal import Role

CLIENT_ID = "bench-emr"


@dataclass(frozen=True)
class Credentials:
    headers: dict[str, str]
    tls: ssl.SSLContext


def credentials(base_url: str, data_dir: Path, out: Path) -> Credentials:
    """Register the benchmark client on the server's data dir and log it in over mTLS.

    The client's key and certificate are kept in ``out``: calling again renews the token.
    """
    out.mkdir(parents=True, exist_ok=True)
    key_file = out / "assertion-key.pem"
    if not key_file.exists():
        generated = ec.generate_private_key(ec.SECP384R1())
        key_file.write_bytes(
            generated.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    private = key_file.read_bytes()
    key = serialization.load_pem_private_key(private, None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with ClientRegistry(data_dir / "auth" / "auth.db") as registry:
        if registry.get(CLIENT_ID) is None:
            registry.add(CLIENT_ID, "default", Role.EMR_INTEGRATION, "system/*.cruds", public_key_pem=public)
    cert, cert_key = out / f"{CLIENT_ID}.pem", out / f"{CLIENT_ID}.key"
    if not cert.exists():
        cert, cert_key = issue_client(data_dir / "tls", CLIENT_ID, out)
    tls = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
    tls.load_cert_chain(cert, cert_key)
    token_url = f"{base_url}/auth/token"
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion(private, CLIENT_ID, token_url),
    }
    reply = httpx.post(token_url, data=form, verify=tls, timeout=30)
    reply.raise_for_status()
    return Credentials({"Authorization": f"Bearer {reply.json()['access_token']}"}, tls)
