"""``fhirlake clients …`` (register and list OAuth clients) and ``fhirlake token`` (a developer helper)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhirlake.errors import FhirlakeError
from security.principal import Role


class CliInputError(FhirlakeError):
    code = "cli-input"


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    clients = sub.add_parser("clients", help="OAuth clients (SMART Backend Services): register, list")
    clients_sub = clients.add_subparsers(dest="clients_command", required=True)
    add = clients_sub.add_parser("add", help="register a client with its public key (PEM) or a JWKS")
    add.add_argument("--client-id", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--tenant", required=True)
    add.add_argument("--scope", required=True, help='SMART v2 scopes, e.g. "system/Observation.cruds system/*.rs"')
    key = add.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", type=Path, help="PEM public key: RSA (2048+ bits) or EC P-384")
    key.add_argument("--jwks", type=Path, help="JWKS document of public keys (each keeps its kid)")
    add.add_argument("--patient", help="bind the client to this Patient id (patient apps)")
    add.add_argument("--organization", help="the client's Organization id")
    add.add_argument("--fhir-user", help="e.g. Practitioner/123")
    add.add_argument("--source-system", help="the EMR's source system")
    add.set_defaults(func=cmd_add)
    listing = clients_sub.add_parser("list", help="registered clients and their key ids")
    listing.set_defaults(func=cmd_list)
    for parser in (add, listing):
        add_data_dir(parser)

    token = sub.add_parser("token", help="developer helper: get an access token with a client's private key")
    token.add_argument("--client-id", required=True)
    token.add_argument("--key", required=True, type=Path, help="the client's PEM private key")
    token.add_argument("--url", required=True, help="token endpoint, e.g. https://host:8443/auth/token")
    token.add_argument("--scope", help="scopes to request (default: all registered)")
    token.add_argument("--cacert", type=Path, help="CA certificate (PEM) that signed the server's certificate")
    token.set_defaults(func=cmd_token)


def _registry(args: argparse.Namespace) -> Any:
    from security.clients import ClientRegistry

    data_dir: Path = args.settings_of(args).data_dir.resolve()
    return ClientRegistry(data_dir / "auth" / "auth.db")


def _describe(client: Any) -> dict[str, Any]:
    doc = {"client_id": client.client_id, "tenant": client.tenant, "role": client.role.value}
    doc |= {"scope": client.scope, "kids": list(client.kids), "created": client.created}
    bindings = {"patient": client.patient, "organization": client.organization, "fhirUser": client.fhir_user}
    bindings["source_system"] = client.source_system
    return doc | {name: value for name, value in bindings.items() if value is not None}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise CliInputError(f"cannot read the {what} file") from None


def cmd_add(args: argparse.Namespace) -> int:
    keys: dict[str, Any] = {}
    if args.public_key is not None:
        keys["public_key_pem"] = _read(args.public_key, "public key")
    else:
        try:
            keys["jwks"] = json.loads(_read(args.jwks, "JWKS"))
        except ValueError:
            raise CliInputError("the JWKS file is not JSON") from None
    with _registry(args) as registry:
        client = registry.add(
            args.client_id,
            args.tenant,
            args.role,
            args.scope,
            patient=args.patient,
            organization=args.organization,
            fhir_user=args.fhir_user,
            source_system=args.source_system,
            **keys,
        )
    args.print(_describe(client))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _registry(args) as registry:
        args.print([_describe(client) for client in registry.clients()])
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import ssl

    from security.oauth import JWT_BEARER, client_assertion

    try:
        import httpx
    except ImportError:
        raise CliInputError("fhirlake token needs the httpx package (pip install httpx)") from None

    assertion = client_assertion(_read(args.key, "private key"), args.client_id, args.url)
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    if args.scope:
        form["scope"] = args.scope
    verify: ssl.SSLContext | bool = True
    if args.cacert is not None:
        try:
            verify = ssl.create_default_context(cafile=str(args.cacert))
        except (OSError, ssl.SSLError):
            raise CliInputError("cannot read the CA certificate file") from None
    try:
        response = httpx.post(args.url, data=form, verify=verify, timeout=10.0)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        args.print({"error": "request_failed", "detail": type(exc).__name__})
        return 1
    args.print(body)
    return 0 if response.status_code == 200 else 1
