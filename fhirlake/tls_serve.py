"""uvicorn over TLS: TLS 1.2 or newer only, and the verified client certificate reaches the app.

uvicorn has no ASGI ``tls`` extension, so the HTTP protocol classes below read the
peer certificate from the transport once the handshake is done and add it to every
request scope of that connection as ``scope["extensions"]["fhirlake.client_cert"]``
(a ``security.tls.ClientCert``), next to the transport's peer address.

TLS >= 1.2 is enforced by building the ``SSLContext`` ourselves (``security.tls.server_context``)
through uvicorn's ``ssl_context_factory`` (uvicorn >= 0.47): uvicorn's own knobs cannot set a
minimum version (``ssl_version`` only picks one exact protocol or "any").
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fhirlake.settings import Settings
from security.certs import CertPaths, init_ca, init_ca_and_server
from security.errors import SecurityError
from security.tls import CLIENT_CERT_KEY, PEER_KEY, STRONG_CIPHERS, ClientCertError, from_der, server_context

log = structlog.get_logger("fhirlake.tls")

AsgiApp = Callable[[Any, Any, Any], Any]


class TlsConfigError(SecurityError):
    """The TLS settings are incomplete or point at missing files, or uvicorn is too old."""

    code = "tls-config"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path


def tls_dir(settings: Settings) -> Path:
    """Where the local CA and the default server certificate live: ``<data-dir>/tls``."""
    return settings.data_dir.resolve() / "tls"


def tls_files(settings: Settings) -> TlsFiles:
    """The server certificate, key and client CA to serve with, creating the local ones if needed.

    Without ``tls.cert_file``/``key_file`` the local CA and server certificate under
    ``<data-dir>/tls`` are created (first start) or renewed (near expiry). Raises
    TlsConfigError when only one of cert_file/key_file is set or a configured file is
    missing, and CertificateError when the local CA is inconsistent or unsafe.
    """
    tls = settings.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        raise TlsConfigError("set both tls.cert_file and tls.key_file, or neither")
    local = CertPaths.under(tls_dir(settings))
    created = not local.ca_cert.exists()
    if tls.cert_file is None:
        init_ca_and_server(local.ca_cert.parent)
    elif tls.client_ca_file is None:
        init_ca(local.ca_cert.parent)
    if created and local.ca_cert.exists():
        log.info("tls_local_ca_created", tls="created")
    files = TlsFiles(
        tls.cert_file or local.server_cert, tls.key_file or local.server_key, tls.client_ca_file or local.ca_cert
    )
    for path in (files.cert, files.key, files.client_ca):
        if not path.is_file():
            raise TlsConfigError(f"a configured TLS file does not exist: {path.name}")
    return files


def uvicorn_tls_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that serve HTTPS with client certificates.

    With ``tls.enabled`` false, returns ``{}`` and logs ``plain_http_development_mode``.
    The options pin the HTTP protocol to ``ClientCertHttpToolsProtocol`` and turn
    WebSockets off (a WebSocket scope would not carry the certificate). Raises
    TlsConfigError or CertificateError as ``tls_files`` does, and TlsConfigError when the
    installed uvicorn has no ``ssl_context_factory``.
    """
    if not settings.tls.enabled:
        log.warning("plain_http_development_mode", tls="off")
        return {}
    if "ssl_context_factory" not in inspect.signature(uvicorn.Config).parameters:
        raise TlsConfigError("uvicorn >= 0.47 is required to enforce TLS 1.2 or newer")
    if settings.tls.client_cert_header and not settings.tls.trusted_proxies:
        log.warning("client_cert_header_ignored", tls="no trusted_proxies")
    files = tls_files(settings)
    return {
        "ssl_certfile": str(files.cert),
        "ssl_keyfile": str(files.key),
        "ssl_ca_certs": str(files.client_ca),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ciphers": STRONG_CIPHERS,
        "ssl_context_factory": tls_context_factory,
        "http": ClientCertHttpToolsProtocol,
        "ws": "none",
    }


def tls_context_factory(config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: ``server_context`` from the config's files.

    A module-level function, so it pickles into worker processes. Raises TlsConfigError
    when a file is not configured and CertificateError when one cannot be loaded.
    """
    if not (config.ssl_certfile and config.ssl_keyfile and config.ssl_ca_certs):
        raise TlsConfigError("ssl_certfile, ssl_keyfile and ssl_ca_certs are all required")
    return server_context(config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certs)


def _with_client_cert(app: AsgiApp, transport: asyncio.BaseTransport, peer: Any) -> AsgiApp | None:
    """``app`` with this connection's verified certificate and peer address in each scope; None if unreadable."""
    ssl_object = transport.get_extra_info("ssl_object")
    # With CERT_OPTIONAL a certificate is only present here if the handshake verified it.
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    extensions: dict[str, Any] = {PEER_KEY: tuple(peer)} if peer else {}
    if der:
        try:
            extensions[CLIENT_CERT_KEY] = from_der(der)
        except ClientCertError:
            return None

    async def app_with_client_cert(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["extensions"] = {**(scope.get("extensions") or {}), **extensions}
        await app(scope, receive, send)

    return app_with_client_cert


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the connection's client certificate in each request scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        app = _with_client_cert(self.app, transport, self.client)
        if app is None:
            transport.abort()
            return
        self.app = app


class ClientCertHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the connection's client certificate in each request scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        app = _with_client_cert(self.app, transport, self.client)
        if app is None:
            transport.abort()
            return
        self.app = app
