"""The S3 side of the WORM copy: an Object Lock (COMPLIANCE) bucket that is only ever added to.

:class:`LockedBucket` checks the bucket's settings, stores objects locked for the retention
period, and finds a batch already stored from a given seq. It has no delete, and every PUT is
preceded by a HEAD that refuses an existing key holding other bytes. That check is ours on purpose:
the emulator used in tests (moto) does not enforce every Object Lock rule (see DESIGN.md, "Known
traps"), and on AWS a PUT to an existing key of a versioned bucket silently adds a version instead
of failing. Every S3 failure is raised as AuditUnavailableError, so a breaker can count it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from audit.errors import AuditConfigError, AuditIntegrityError, AuditUnavailableError

__all__ = ["LOCK_MODE", "LockedBucket", "batch_name", "s3_client"]

LOCK_MODE = "COMPLIANCE"
_DIGEST_META = "sha256"  # user metadata on every object: the hex SHA-256 of its bytes
_MISSING = {"404", "NoSuchKey", "NotFound"}
_BATCH = re.compile(r"(\d{12})-(\d{12})\.jsonl")


def batch_name(first: int, last: int) -> str:
    """The object name of the lines ``first`` to ``last`` (seqs, inclusive)."""
    return f"{first:012d}-{last:012d}.jsonl"


def s3_client(region: str, endpoint_url: str | None, timeout_s: float) -> Any:
    """A boto3 S3 client whose calls give up after ``timeout_s`` (connect and read) and one retry."""
    return boto3.session.Session().client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )


def _retention_days(rule: dict[str, Any]) -> int:
    retention = rule.get("DefaultRetention", {})
    # A year counts as 365 days: the shorter reading, so a 6-year default never falls below 2190.
    return int(retention.get("Days", 0)) or int(retention.get("Years", 0)) * 365


def _unavailable(operation: str, exc: Exception) -> AuditUnavailableError:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
    error = AuditUnavailableError(f"S3 {operation} of the audit WORM copy failed: {code}")
    error.__cause__ = exc
    return error


class LockedBucket:
    """One prefix of an S3 Object Lock bucket, written in COMPLIANCE mode and never overwritten."""

    def __init__(self, client: Any, bucket: str, prefix: str, retention: timedelta) -> None:
        self._client, self._bucket, self._prefix, self.retention = client, bucket, prefix.strip("/"), retention

    def __repr__(self) -> str:
        return f"LockedBucket(bucket={self._bucket!r}, prefix={self._prefix!r}, retention={self.retention.days}d)"

    def key_for(self, name: str) -> str:
        """The object key of ``name`` under the prefix."""
        return f"{self._prefix}/{name}" if self._prefix else name

    def check(self) -> None:
        """Require versioning Enabled and a default COMPLIANCE retention of at least the retention period.

        Raises AuditConfigError naming the missing setting, AuditUnavailableError if S3 cannot be asked.
        """
        if self._ask(self._client.get_bucket_versioning, "GetBucketVersioning").get("Status") != "Enabled":
            raise AuditConfigError("audit WORM bucket must have versioning Enabled")
        lock = self._ask(self._client.get_object_lock_configuration, "GetObjectLockConfiguration")
        config = lock.get("ObjectLockConfiguration", {})
        if config.get("ObjectLockEnabled") != "Enabled":
            raise AuditConfigError("audit WORM bucket must have Object Lock Enabled")
        rule = config.get("Rule", {})
        mode = rule.get("DefaultRetention", {}).get("Mode")
        if mode != LOCK_MODE:
            raise AuditConfigError(f"audit WORM bucket default retention must be {LOCK_MODE} mode, not {mode}")
        if _retention_days(rule) < self.retention.days:
            raise AuditConfigError(
                f"audit WORM bucket default retention is {_retention_days(rule)} days, "
                f"below the required {self.retention.days}"
            )

    def _ask(self, call: Callable[..., Any], operation: str) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = call(Bucket=self._bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                raise AuditConfigError("audit WORM bucket has no Object Lock configuration") from None
            raise _unavailable(operation, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(operation, exc) from exc
        return answer

    def batch_from(self, first: int) -> int | None:
        """The last seq of a batch already stored that starts at ``first``, or None if there is none.

        Raises AuditUnavailableError if S3 cannot be asked.
        """
        try:
            answer = self._client.list_objects_v2(Bucket=self._bucket, Prefix=self.key_for(f"{first:012d}-"))
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("ListObjectsV2", exc) from exc
        lasts = [
            int(m.group(2))
            for obj in answer.get("Contents", [])
            if (m := _BATCH.fullmatch(str(obj["Key"]).rsplit("/", 1)[-1]))
        ]
        return max(lasts) if lasts else None

    def put_locked(self, key: str, body: bytes, content_type: str) -> bool:
        """Store ``body`` at ``key``, locked in COMPLIANCE mode; False if the same bytes were already there.

        Raises AuditIntegrityError if ``key`` holds other bytes, AuditUnavailableError if S3 failed.
        """
        digest = hashlib.sha256(body).hexdigest()
        if self._refuse_overwrite(key, digest):
            return False  # the very same bytes are already stored and locked (a re-ship after a crash)
        try:
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
                Metadata={_DIGEST_META: digest},
                ObjectLockMode=LOCK_MODE,
                ObjectLockRetainUntilDate=datetime.now(UTC) + self.retention,
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("PutObject", exc) from exc
        return True

    def _refuse_overwrite(self, key: str, digest: str) -> bool:
        """True if ``key`` already holds exactly these bytes, False if it is free.

        Raises AuditIntegrityError if it holds other bytes (an overwrite attempt), AuditUnavailableError
        if S3 cannot be asked.
        """
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING:
                return False
            raise _unavailable("HeadObject", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("HeadObject", exc) from exc
        if head.get("Metadata", {}).get(_DIGEST_META) != digest:
            raise AuditIntegrityError("overwrite", f"WORM object {key} already exists with other content")
        return True
