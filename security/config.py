"""Settings of the security package (composed into ``fhirlake.settings.Settings``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class KmsSettings(BaseModel):
    provider: str = Field(default="local", description="KMS provider: 'local' (embedded default) or 'aws-kms'.")
    master_key: SecretStr | None = Field(
        default=None, description="local: base64 of the 32-byte master secret that encrypts the keyring."
    )
    master_key_file: Path | None = Field(
        default=None,
        description="local: file holding the master secret; default <data-dir>/keys/master.key, created 0600.",
    )
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = Field(default=None, description="aws-kms: endpoint override (tests, VPC).")
    aws_alias_prefix: str = Field(default="alias/fhirlake", description="aws-kms: KEK alias is <prefix>-<tenant>.")
    aws_create_keys: bool = Field(
        default=False, description="aws-kms: create a tenant KEK when its alias is missing (else fail)."
    )
    aws_multi_region: bool = Field(
        default=True, description="aws-kms: keys it creates are multi-region, so a DR region can hold replicas."
    )
    timeout_s: float = Field(default=2.0, gt=0, description="Connect and read timeout of one KMS call.")


class SecuritySettings(BaseModel):
    encryption: bool = Field(
        default=True, description="Field-level encryption. Off only for benchmarks; a data dir never mixes modes."
    )
    kms: KmsSettings = KmsSettings()
    key_cache_size: int = Field(default=10_000, ge=1, description="Unwrapped data keys kept in memory.")
    key_cache_ttl_s: float = Field(default=300.0, gt=0, description="Age after which an unwrapped key is dropped.")
    kms_check_interval_s: float = Field(
        default=5.0, gt=0, description="How often the KMS is probed while keys are served from the cache."
    )
    kms_retry_after_s: float = Field(default=2.0, gt=0, description="After a KMS failure, fail fast this long.")


class TlsSettings(BaseModel):
    enabled: bool = Field(default=True, description="HTTPS (TLS 1.2+). False only with the loudly logged dev flag.")
    cert_file: Path | None = Field(default=None, description="Server certificate (PEM); default <data>/tls/server.pem.")
    key_file: Path | None = Field(default=None, description="Server private key (PEM); default <data>/tls/server.key.")
    client_ca_file: Path | None = Field(
        default=None, description="CA that client certificates must chain to; default <data>/tls/ca.pem."
    )
    client_cert_header: str | None = Field(
        default=None, description="Header carrying the client certificate (PEM, URL-encoded) from a trusted proxy."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Peer addresses allowed to send client_cert_header; empty = header ignored."
    )


class OidcIssuerSettings(BaseModel):
    issuer: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    audience: str | None = None
    tenant: str = "default"


class AuthSettings(BaseModel):
    issuer: str | None = Field(default=None, description="Issuer of our access tokens; default the server's base URL.")
    token_ttl_s: int = Field(default=300, ge=30, le=300, description="Access token lifetime (at most 300 s).")
    assertion_max_ttl_s: int = Field(default=300, ge=30, le=300, description="Longest client-assertion lifetime.")
    external_issuers: list[OidcIssuerSettings] = Field(default_factory=list)
    break_glass_minutes: int = Field(default=60, ge=1, le=60)
    policy_db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the Casbin policy table (e.g. postgresql+psycopg://…); default: shipped CSV.",
    )
