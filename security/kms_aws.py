"""The ``aws-kms`` provider: one AWS KMS key per tenant KEK version, found through an alias.

The tenant's current KEK is whatever ``<alias_prefix>-<tenant>`` points at. Rotation creates a
new key and moves the alias; older keys stay enabled so that DEKs wrapped under them still
unwrap. KMS errors are translated in one place (``_kms_errors``): unreachable or overloaded
KMS becomes KmsUnavailableError (fail closed, retry later), a refusal becomes KeyAccessError.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from security.config import KmsSettings
from security.errors import KeyAccessError, KeyStoreError, KmsUnavailableError, SecurityError
from security.kms import Context

_ALIAS_TTL_S = 30.0
_TRANSIENT_CODES = frozenset(
    {"KMSInternalException", "DependencyTimeoutException", "ThrottlingException", "ServiceUnavailableException"}
)
_REFUSED_CODES = frozenset(
    {
        "InvalidCiphertextException",
        "AccessDeniedException",
        "IncorrectKeyException",
        "NotFoundException",
        "DisabledException",
        "KMSInvalidStateException",
        "NotAuthorizedException",
        "InvalidKeyUsageException",
    }
)


def _translate(exc: Exception, operation: str) -> SecurityError:
    """The security error for a failed KMS call; the message names the operation and AWS error code only."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return KmsUnavailableError(f"KMS {operation} failed: {type(exc).__name__}")
    if isinstance(exc, NoCredentialsError):
        return KeyStoreError(f"KMS {operation} failed: no AWS credentials configured")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in _TRANSIENT_CODES or (status >= 500 and code not in _REFUSED_CODES):
            return KmsUnavailableError(f"KMS {operation} failed: {code}")
        return KeyAccessError(f"KMS {operation} refused: {code}")
    return KeyAccessError(f"KMS {operation} failed: {type(exc).__name__}")


@contextmanager
def _kms_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise _translate(exc, operation) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class AwsKmsProvider:
    """KEKs in AWS KMS (or anything speaking its API at ``aws_endpoint_url``)."""

    name = "aws-kms"

    def __init__(self, settings: KmsSettings, keys_dir: Path, client: Any = None) -> None:
        # keys_dir is part of the provider signature; nothing is stored locally with KMS.
        self._settings = settings
        self._client: Any = client or boto3.session.Session().client(
            "kms",
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=Config(
                connect_timeout=settings.timeout_s,
                read_timeout=settings.timeout_s,
                retries={"total_max_attempts": 1, "mode": "standard"},  # retries are ours (security.keys)
            ),
        )
        self._lock = threading.Lock()
        self._aliases: dict[str, tuple[str, float]] = {}

    def alias(self, tenant: str) -> str:
        """The KMS alias naming ``tenant``'s current KEK."""
        return f"{self._settings.aws_alias_prefix}-{tenant}"

    def current_kek(self, tenant: str) -> str:
        """ARN of the key behind the tenant alias, cached ~30 s; created when missing and allowed.

        Raises KeyStoreError if the alias is missing and ``aws_create_keys`` is off,
        KmsUnavailableError or KeyAccessError if KMS fails.
        """
        with self._lock:
            cached = self._aliases.get(tenant)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        arn = self._lookup(self.alias(tenant))
        if arn is None:
            if not self._settings.aws_create_keys:
                raise KeyStoreError(f"KMS alias {self.alias(tenant)!r} does not exist and aws_create_keys is off")
            arn = self._create_with_alias(tenant)
        with self._lock:
            self._aliases[tenant] = (arn, time.monotonic() + _ALIAS_TTL_S)
        return arn

    def in_region(self, kek_id: str) -> str:
        """``kek_id`` as this region calls it.

        A multi-region key (``mrk-…``) has one key id and an ARN per region: data keys
        wrapped in the primary region name the primary's ARN, and the secondary region
        unwraps them with its replica (same key material) by rewriting the ARN's region.
        Single-region keys are left alone: they are usable only where they live.
        """
        parts = kek_id.split(":", 5)
        if len(parts) == 6 and parts[0] == "arn" and parts[5].startswith("key/mrk-"):
            region = self._settings.aws_region
            if region and parts[3] != region:
                parts[3] = region
                return ":".join(parts)
        return kek_id

    def generate_data_key(self, kek_id: str, context: Context) -> tuple[bytes, bytes]:
        """A fresh AES-256 DEK ``(plaintext, wrapped)``. Raises KmsUnavailableError, KeyAccessError."""
        with _kms_errors("GenerateDataKey"):
            out = self._client.generate_data_key(
                KeyId=self.in_region(kek_id), KeySpec="AES_256", EncryptionContext=dict(context)
            )
        return bytes(out["Plaintext"]), bytes(out["CiphertextBlob"])

    def decrypt_data_key(self, kek_id: str, wrapped: bytes, context: Context) -> bytes:
        """Unwrap a DEK wrapped under ``kek_id`` with ``context``. Raises KmsUnavailableError, KeyAccessError."""
        with _kms_errors("Decrypt"):
            out = self._client.decrypt(
                CiphertextBlob=wrapped, EncryptionContext=dict(context), KeyId=self.in_region(kek_id)
            )
        return bytes(out["Plaintext"])

    def rewrap(self, kek_id: str, wrapped: bytes, new_kek_id: str, context: Context) -> bytes:
        """The same DEK wrapped under ``new_kek_id``, inside KMS. Raises KmsUnavailableError, KeyAccessError."""
        with _kms_errors("ReEncrypt"):
            out = self._client.re_encrypt(
                CiphertextBlob=wrapped,
                SourceEncryptionContext=dict(context),
                SourceKeyId=self.in_region(kek_id),
                DestinationKeyId=self.in_region(new_kek_id),
                DestinationEncryptionContext=dict(context),
            )
        return bytes(out["CiphertextBlob"])

    def rotate(self, tenant: str) -> str:
        """Create a new KEK version, point the tenant alias at it, return its ARN; older keys stay enabled.

        Raises KeyStoreError if the tenant has no KEK and ``aws_create_keys`` is off,
        KmsUnavailableError or KeyAccessError if KMS fails.
        """
        alias = self.alias(tenant)
        if self._lookup(alias) is None:
            return self.current_kek(tenant)
        arn = self._create_key(tenant)
        with _kms_errors("UpdateAlias"):
            self._client.update_alias(AliasName=alias, TargetKeyId=arn)
        with self._lock:
            self._aliases.pop(tenant, None)
        return arn

    def probe(self, tenant: str) -> None:
        """Raise KmsUnavailableError unless KMS describes the tenant's current KEK now."""
        try:
            kek = self.current_kek(tenant)
            with _kms_errors("DescribeKey"):
                self._client.describe_key(KeyId=kek)
        except SecurityError as exc:
            if isinstance(exc, KmsUnavailableError):
                raise
            raise KmsUnavailableError(f"KMS probe failed: {exc}") from exc

    def _lookup(self, alias: str) -> str | None:
        with _kms_errors("DescribeKey"):
            try:
                out = self._client.describe_key(KeyId=alias)
            except ClientError as exc:
                if _code(exc) == "NotFoundException":
                    return None
                raise
        return str(out["KeyMetadata"]["Arn"])

    def _create_key(self, tenant: str) -> str:
        with _kms_errors("CreateKey"):
            out = self._client.create_key(
                Description=f"fhirlake KEK of tenant {tenant}",
                KeyUsage="ENCRYPT_DECRYPT",
                KeySpec="SYMMETRIC_DEFAULT",
                MultiRegion=self._settings.aws_multi_region,  # replicable to the DR region
                Tags=[{"TagKey": "tenant", "TagValue": tenant}],
            )
        return str(out["KeyMetadata"]["Arn"])

    def _create_with_alias(self, tenant: str) -> str:
        alias, arn = self.alias(tenant), self._create_key(tenant)
        with _kms_errors("CreateAlias"):
            try:
                self._client.create_alias(AliasName=alias, TargetKeyId=arn)
            except ClientError as exc:
                if _code(exc) != "AlreadyExistsException":
                    raise
                # Another process created the alias first: use its key, retire ours.
                self._client.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7)
                winner = self._lookup(alias)
                if winner is None:
                    raise
                return winner
        return arn
