"""The S3 Object Lock sink: a WORM copy of the audit trail beside a local primary sink.

:class:`WormSink` wraps a local :class:`~audit.sinks.AuditSink` (normally the segment files) and
stores every appended batch a second time as one S3 object, ``<prefix>/<first:012d>-<last:012d>.jsonl``
(the seqs of its first and last line), in COMPLIANCE mode retained for ``retention_days`` (at least
six years, HIPAA 164.316(b)(2)). A batch counts as durable only once both copies are.

Order of an ``append``: the S3 PUT first, then the primary. If the PUT fails nothing was written
anywhere, so the trail's rule holds (a failed batch leaves nothing readable) and its callers answer
503; the trail then retries with the same seqs. Writing the primary first would leave lines there
that the trail believes were never made, and its next batch would reuse their seqs. The one gap
left: if the PUT succeeds and the local write then fails, S3 keeps a locked object of a batch that
was never acknowledged; :meth:`WormSink._refuse_overwrite` accepts a retry only if it has exactly
the same bytes, so a verifier must treat the local chain as the reference and such an object as
surplus.

Our code never deletes or overwrites: the module has no delete, and every PUT is preceded by a HEAD
that refuses an existing key holding other bytes. This check is ours on purpose: the emulator used
in tests (moto) does not enforce every Object Lock rule (see DESIGN.md, "Known traps"), and on AWS
a PUT to an existing key of a versioned bucket silently adds a version instead of failing.

The bucket is checked when the sink is built (:meth:`WormSink.check_bucket`): versioning Enabled,
Object Lock Enabled, a default retention in COMPLIANCE mode of at least ``retention_days``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from audit.errors import AuditConfigError, AuditIntegrityError, AuditUnavailableError
from audit.sinks import AuditSink

__all__ = ["MIN_RETENTION_DAYS", "WormSink"]

MIN_RETENTION_DAYS = 2190  # six years: HIPAA 164.316(b)(2) retention of required documentation
LOCK_MODE = "COMPLIANCE"
_DIGEST_META = "sha256"  # user metadata on every object: the hex SHA-256 of its bytes
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _seq_of(line: bytes) -> int:
    try:
        return int(orjson.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        raise AuditIntegrityError("seq", "an audit line handed to the WORM sink has no seq") from None


def _retention_days(rule: dict[str, Any]) -> int:
    retention = rule.get("DefaultRetention", {})
    # A year counts as 365 days: the shorter reading, so a 6-year default never falls below 2190.
    return int(retention.get("Days", 0)) or int(retention.get("Years", 0)) * 365


def _unavailable(operation: str, exc: Exception) -> AuditUnavailableError:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
    error = AuditUnavailableError(f"S3 {operation} of the audit WORM copy failed: {code}")
    error.__cause__ = exc
    return error


class WormSink:
    """A local primary sink plus an S3 Object Lock (COMPLIANCE) copy of every batch and public key."""

    def __init__(
        self,
        primary: AuditSink,
        *,
        bucket: str,
        prefix: str,
        retention_days: int = MIN_RETENTION_DAYS,
        region: str,
        endpoint_url: str | None = None,
        client: Any = None,
        timeout_s: float = 5.0,
    ) -> None:
        """Wrap ``primary`` and check the bucket.

        Raises AuditConfigError if ``retention_days`` is under six years or the bucket is not set up
        for WORM (see :meth:`check_bucket`), AuditUnavailableError if S3 cannot be reached.
        """
        if retention_days < MIN_RETENTION_DAYS:
            raise AuditConfigError(f"audit WORM retention must be at least {MIN_RETENTION_DAYS} days (HIPAA)")
        if not bucket:
            raise AuditConfigError("audit WORM sink needs a bucket name")
        self._primary = primary
        self._bucket, self._prefix = bucket, prefix.strip("/")
        self._retention = timedelta(days=retention_days)
        self._client: Any = client or boto3.session.Session().client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )
        self.check_bucket()

    def __repr__(self) -> str:
        return f"WormSink(bucket={self._bucket!r}, prefix={self._prefix!r}, retention={self._retention.days}d)"

    def key_for(self, name: str) -> str:
        """The object key of ``name`` under the sink's prefix."""
        return f"{self._prefix}/{name}" if self._prefix else name

    def check_bucket(self) -> None:
        """Require versioning Enabled and a default COMPLIANCE retention of at least ``retention_days``.

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
        if _retention_days(rule) < self._retention.days:
            raise AuditConfigError(
                f"audit WORM bucket default retention is {_retention_days(rule)} days, "
                f"below the required {self._retention.days}"
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

    def append(self, lines: Sequence[bytes], checkpoints: Sequence[bytes] = ()) -> None:
        """Store the batch in S3 (locked), then in the primary.

        Raises AuditUnavailableError if S3 refused or could not be reached (nothing was then written),
        AuditIntegrityError if the batch's key already holds other bytes, or what the primary raises.
        """
        if not lines:
            return
        name = f"{_seq_of(lines[0]):012d}-{_seq_of(lines[-1]):012d}.jsonl"
        self._put_locked(self.key_for(name), b"\n".join(lines) + b"\n", "application/x-ndjson")
        self._primary.append(lines, checkpoints)

    def publish_key(self, key_id: str, public_key: bytes) -> None:
        """Publish in the primary, then as ``<prefix>/public_keys/<key_id>.json`` (locked).

        One object per key id rather than one ``public_keys.json``: adding a key must not overwrite.
        Raises AuditIntegrityError if the id names another key, AuditUnavailableError if S3 fails.
        """
        self._primary.publish_key(key_id, public_key)
        body = orjson.dumps(
            {key_id: {"algorithm": "Ed25519", "public_key": base64.b64encode(public_key).decode()}},
            option=orjson.OPT_SORT_KEYS,
        )
        self._put_locked(self.key_for(f"public_keys/{key_id}.json"), body, "application/json")

    def read(self) -> Iterator[bytes]:
        return self._primary.read()

    def tail(self, count: int) -> list[bytes]:
        return self._primary.tail(count)

    def close(self) -> None:
        self._primary.close()

    def _put_locked(self, key: str, body: bytes, content_type: str) -> None:
        digest = hashlib.sha256(body).hexdigest()
        if self._refuse_overwrite(key, digest):
            return  # the very same bytes are already stored and locked (a retry after a lost answer)
        retain_until = datetime.now(UTC) + self._retention
        try:
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
                Metadata={_DIGEST_META: digest},
                ObjectLockMode=LOCK_MODE,
                ObjectLockRetainUntilDate=retain_until,
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("PutObject", exc) from exc

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
