"""The server's TLS context and the verified client certificate of a request.

A client certificate reaches the app in one of two ways:

* the TLS handshake: ``server_context`` asks for a certificate (optional, so
  token-only clients still connect) and refuses any presented certificate that
  does not chain to the client CA or is outside its validity; the transport's
  protocol puts the result into ``scope["extensions"][CLIENT_CERT_KEY]``;
* a trusted TLS-terminating proxy: a header with the URL-encoded PEM, honoured
  only from ``trusted_proxies`` and verified here against the CA again.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.certs import CertificateError, common_name_of, subject_of
from security.config import TlsSettings

CLIENT_CERT_KEY = "fhirlake.client_cert"
PEER_KEY = "fhirlake.peer"  # the transport's peer address, untouched by proxy-header rewriting
MIN_VERSION = ssl.TLSVersion.TLSv1_2
# TLS 1.2: forward-secret AEAD suites only; TLS 1.3 suites are all strong and not affected by this string.
STRONG_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS:!RC4:!3DES"

_PEERCERT_NAMES = {
    "commonName": NameOID.COMMON_NAME,
    "countryName": NameOID.COUNTRY_NAME,
    "localityName": NameOID.LOCALITY_NAME,
    "stateOrProvinceName": NameOID.STATE_OR_PROVINCE_NAME,
    "organizationName": NameOID.ORGANIZATION_NAME,
    "organizationalUnitName": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "domainComponent": NameOID.DOMAIN_COMPONENT,
    "userId": NameOID.USER_ID,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "surname": NameOID.SURNAME,
    "givenName": NameOID.GIVEN_NAME,
    "title": NameOID.TITLE,
}

StrPath = str | PathLike[str]


class ClientCertError(CertificateError):
    """A client certificate was presented but is malformed, not from the CA, or not currently valid."""

    code = "client-certificate"


@dataclass(frozen=True, slots=True)
class ClientCert:
    subject: str  # RFC 4514, most specific first: "CN=lab-feed,O=Example"
    common_name: str
    issuer: str
    not_after: dt.datetime  # UTC-aware


def server_context(cert: StrPath, key: StrPath, client_ca: StrPath) -> ssl.SSLContext:
    """A server context: TLS >= 1.2, strong ciphers, client certificate optional but verified when sent.

    Raises CertificateError when a file is missing, unreadable, or the key does not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.set_ciphers(STRONG_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cafile=client_ca)
    except (OSError, ssl.SSLError):
        raise CertificateError("the server certificate, key or client CA cannot be loaded") from None
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def from_der(der: bytes) -> ClientCert:
    """A ``ClientCert`` of a DER certificate the TLS handshake already verified (no checks here).

    Raises ClientCertError when the bytes are not a certificate.
    """
    try:
        return _client_cert(x509.load_der_x509_certificate(der))
    except ValueError:
        raise ClientCertError("the peer certificate is malformed") from None


def from_peercert(peercert: Mapping[str, Any]) -> ClientCert:
    """A ``ClientCert`` of ``SSLSocket.getpeercert()`` output (a certificate the handshake verified).

    Raises ClientCertError when the dict is empty (no verified certificate) or carries a
    name attribute this module does not know (dropping it could merge two identities).
    """
    if not peercert:
        raise ClientCertError("no verified peer certificate")
    try:
        subject, issuer = _name(peercert["subject"]), _name(peercert["issuer"])
        not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(peercert["notAfter"]), dt.UTC)
    except (KeyError, TypeError, ValueError):
        raise ClientCertError("the peer certificate has an unexpected form") from None
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return ClientCert(
        subject.rfc4514_string(), str(names[0].value) if names else "", issuer.rfc4514_string(), not_after
    )


def from_pem(pem: str, ca_pem: bytes | str, now: dt.datetime | None = None) -> ClientCert:
    """Verify a PEM client certificate against the CA(s) in ``ca_pem`` and describe it.

    Checks: signed directly by a CA of ``ca_pem``, both within their validity at ``now``,
    not itself a CA, and, when it has an extended key usage, clientAuth among it.
    Intermediate CAs are not followed. Raises ClientCertError on any failure.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        raise ClientCertError("the client certificate is not a PEM certificate") from None
    at = now or dt.datetime.now(dt.UTC)
    cas = _cas(ca_pem.encode("ascii") if isinstance(ca_pem, str) else ca_pem)
    issuer = next((ca for ca in cas if _issued_by(cert, ca)), None)
    if issuer is None:
        raise ClientCertError("the client certificate was not issued by the client CA")
    if not (_valid_at(cert, at) and _valid_at(issuer, at)):
        raise ClientCertError("the client certificate is expired or not yet valid")
    if _is_ca(cert) or not _allows_client_auth(cert):
        raise ClientCertError("the certificate is not a client certificate")
    return _client_cert(cert)


def client_cert_from_scope(scope: Mapping[str, Any], settings: TlsSettings, ca_pem: bytes | str) -> ClientCert | None:
    """The request's verified client certificate, or None when it has none.

    The handshake's certificate wins. Otherwise the ``client_cert_header`` counts only when
    the transport peer (not a proxy-rewritten ``client``) is in ``trusted_proxies``; from any
    other address the header is ignored. Raises ClientCertError when a trusted proxy sends a
    certificate that fails ``from_pem`` or sends the header more than once.
    """
    extensions = scope.get("extensions") or {}
    cert = extensions.get(CLIENT_CERT_KEY)
    if isinstance(cert, ClientCert):
        return cert
    if not settings.client_cert_header or not settings.trusted_proxies:
        return None
    peer = extensions.get(PEER_KEY) or scope.get("client")
    if not peer or not _trusted(str(peer[0]), settings.trusted_proxies):
        return None
    wanted = settings.client_cert_header.lower().encode("latin-1")
    values = [value for name, value in scope.get("headers", ()) if name.lower() == wanted]
    if not values:
        return None
    if len(values) > 1:
        raise ClientCertError("the client certificate header was sent more than once")
    pem = unquote(values[0].decode("latin-1")).strip()
    if not pem:  # proxies send the header empty when the client presented no certificate (nginx, envoy)
        return None
    return from_pem(pem, ca_pem)


def _client_cert(cert: x509.Certificate) -> ClientCert:
    return ClientCert(subject_of(cert), common_name_of(cert), cert.issuer.rfc4514_string(), cert.not_valid_after_utc)


def _name(rdns: Any) -> x509.Name:
    return x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(_PEERCERT_NAMES[key], value) for key, value in rdn])
            for rdn in rdns
        ]
    )


@functools.lru_cache(maxsize=8)
def _cas(ca_pem: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(ca_pem))
    except ValueError:
        raise ClientCertError("the client CA file holds no PEM certificate") from None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # wrong issuer name, bad signature, unsupported key type: all mean "not this CA"
        return False
    return _is_ca(ca)


def _valid_at(cert: x509.Certificate, at: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _allows_client_auth(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages


def _trusted(host: str, proxies: list[str]) -> bool:
    if host in proxies:  # an exact entry: an address, or a named peer such as an in-process test client
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
    for proxy in proxies:
        try:
            if address in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue
    return False
