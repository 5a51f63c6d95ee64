"""A local certificate authority: the CA, the server certificate and client certificates.

Everything lives in one directory (by default ``<data-dir>/tls``)::

    ca.pem  ca.key (0600)  server.pem  server.key (0600)

Keys are EC P-256, signatures SHA-256. The CA is never overwritten; the server
certificate is re-issued when it is missing, expires within 30 days, was signed
by another CA, or (only when names are given) does not carry exactly those names.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.errors import SecurityError
from security.secretfile import write_private

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")
CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
CLOCK_SKEW = dt.timedelta(minutes=5)
_SAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class CertificateError(SecurityError):
    """A certificate or its key is missing, unreadable, unsafe or invalid."""

    code = "certificate"


@dataclass(frozen=True, slots=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def under(cls, tls_dir: Path) -> CertPaths:
        return cls(tls_dir / "ca.pem", tls_dir / "ca.key", tls_dir / "server.pem", tls_dir / "server.key")


def init_ca(tls_dir: Path) -> CertPaths:
    """Create the local CA in ``tls_dir`` unless it exists; never overwrite it.

    Raises CertificateError when only one of ``ca.pem`` / ``ca.key`` exists, or the key is unsafe.
    """
    paths = CertPaths.under(tls_dir)
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if paths.ca_cert.exists() or paths.ca_key.exists():
        _load_ca(paths)  # validates the pair
        return paths
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fhirlake"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"fhirlake local CA {secrets.token_hex(4)}"),
        ]
    )
    now = _now()
    cert = (
        _builder(name, name, key.public_key(), now - CLOCK_SKEW, now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(paths.ca_key, _key_pem(key))
    _write_public(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths


def init_ca_and_server(tls_dir: Path, hostnames: list[str] | None = None) -> CertPaths:
    """Ensure the CA and a current server certificate exist in ``tls_dir`` (idempotent).

    ``hostnames`` are DNS names or IP addresses for the server certificate's SAN; with
    None a new certificate gets ``localhost`` and ``127.0.0.1`` and a renewal keeps the
    old names. Raises CertificateError for an inconsistent or unsafe CA, or a bad name.
    """
    paths = init_ca(tls_dir)
    ca_cert, ca_key = _load_ca(paths)
    if paths.server_key.exists():
        _check_private(paths.server_key)
    current = _load_optional(paths.server_cert)
    if current is not None and not _needs_server_cert(current, paths.server_key, ca_cert, hostnames):
        return paths
    names = hostnames or (_san_names(current) if current is not None else list(DEFAULT_HOSTNAMES))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        _builder(_cn(names[0]), ca_cert.subject, key.public_key(), now - CLOCK_SKEW, now + dt.timedelta(SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(paths.server_key, _key_pem(key))
    _write_public(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths


def issue_client(
    tls_dir: Path,
    name: str,
    out_dir: Path,
    days: int = 365,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue a client certificate (CN=``name``, clientAuth) signed by the CA in ``tls_dir``.

    Writes ``<out_dir>/<name>.pem`` and ``<name>.key`` (0600) and returns both paths;
    ``not_before``/``not_after`` override the validity (tests). Raises CertificateError
    when the CA is missing or unsafe, the name is empty or too long, ``days`` < 1, or
    the files already exist.
    """
    if not name or len(name) > 64:
        raise CertificateError("a client name must have 1 to 64 characters")
    if days < 1:
        raise CertificateError("a client certificate must be valid for at least one day")
    ca_cert, ca_key = _load_ca(CertPaths.under(tls_dir))
    stem = _SAFE_FILE_NAME.sub("_", name)
    cert_path, key_path = out_dir / f"{stem}.pem", out_dir / f"{stem}.key"
    if cert_path.exists() or key_path.exists():
        raise CertificateError(f"{stem}.pem or {stem}.key already exists; refusing to overwrite a client key")
    start = not_before or _now() - CLOCK_SKEW
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_cn(name), ca_cert.subject, key.public_key(), start, not_after or start + dt.timedelta(days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (raises CertificateError when missing or malformed)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        raise CertificateError(f"{path.name} is missing or is not a PEM certificate") from None


def subject_of(cert: x509.Certificate) -> str:
    """The certificate's subject as an RFC 4514 string, e.g. ``CN=lab-feed,O=Example``."""
    return cert.subject.rfc4514_string()


def common_name_of(cert: x509.Certificate) -> str:
    """The subject's first common name, or "" when there is none."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _load_ca(paths: CertPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not (paths.ca_cert.exists() and paths.ca_key.exists()):
        raise CertificateError("the local CA is missing or incomplete (ca.pem and ca.key); run 'fhirlake certs init'")
    _check_private(paths.ca_key)
    cert = load_certificate(paths.ca_cert)
    try:
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise CertificateError("ca.key is unreadable or not an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateError("ca.key does not belong to ca.pem")
    return cert, key


def _needs_server_cert(cert: x509.Certificate, key_path: Path, ca: x509.Certificate, names: list[str] | None) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except Exception:  # any failure (issuer, signature, key file) means: not a usable pair, re-issue
        return True
    if key.public_key() != cert.public_key():  # e.g. a crash between writing the key and the certificate
        return True
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return True
    return names is not None and sorted(_san_names(cert)) != sorted(names)


def _san_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return list(DEFAULT_HOSTNAMES)
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", name):
        raise CertificateError(f"not a DNS name or IP address: {name!r}")
    return x509.DNSName(name)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, start: dt.datetime, end: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_optional(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _check_private(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        raise CertificateError(f"{path.name} is missing or unreadable") from None
    if mode & 0o077:
        raise CertificateError(f"{path.name} is accessible by group or others; expected mode 0600")


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
