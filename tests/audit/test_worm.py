"""The S3 Object Lock sink against a real moto server on loopback (and a TCP proxy to cut it off)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError

import audit.worm
from audit.errors import AuditConfigError, AuditIntegrityError, AuditUnavailableError
from audit.segments import SegmentFileSink
from audit.sinks import MemorySink
from audit.trail import AuditTrail
from audit.worm import WormSink
from tests.fixtures.moto import required_moto
from tests.fixtures.netproxy import TcpProxy

REGION = "us-east-1"
SEED = bytes(range(32))
SIX_YEARS = timedelta(days=2190)


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with required_moto() as url:
        yield url


def s3_client(url: str) -> Any:
    return boto3.session.Session().client("s3", region_name=REGION, endpoint_url=url)


def make_bucket(
    url: str, *, lock: bool = True, versioning: bool = True, mode: str = "COMPLIANCE", days: int = 2190
) -> str:
    """A fresh bucket; with ``lock`` created for Object Lock (which turns versioning on) plus a default rule."""
    s3 = s3_client(url)
    name = f"audit-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    if lock:
        s3.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
            },
        )
    elif versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def worm(url: str, bucket: str, primary: Any, **overrides: Any) -> WormSink:
    values: dict[str, Any] = {"bucket": bucket, "prefix": "trail/acme", "region": REGION, "endpoint_url": url}
    return WormSink(primary, **{**values, **overrides})


def stored(url: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
    return sorted(
        s3_client(url).list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []), key=lambda o: o["Key"]
    )


def test_trail_batches_land_locked_in_s3_and_match_the_local_segments(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    sink = worm(s3_url, bucket, SegmentFileSink(tmp_path / "trail"))

    with AuditTrail(sink, SEED, checkpoint_every=3) as trail:
        seqs = [trail.record({"action": "read", "n": n}) for n in range(5)]
    assert seqs == sorted(seqs)

    local = list(SegmentFileSink(tmp_path / "trail").read())
    s3 = s3_client(s3_url)
    objects = stored(s3_url, bucket, "trail/acme/0")
    remote = b"".join(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in objects)
    assert remote == b"".join(line + b"\n" for line in local)
    first, last = orjson.loads(local[0])["seq"], orjson.loads(local[-1])["seq"]
    assert objects[0]["Key"].startswith(f"trail/acme/{first:012d}-")
    assert objects[-1]["Key"].endswith(f"-{last:012d}.jsonl")
    for obj in objects:
        head = s3.head_object(Bucket=bucket, Key=obj["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] >= datetime.now(UTC) + SIX_YEARS - timedelta(minutes=5)
    key = s3.get_object(Bucket=bucket, Key=f"trail/acme/public_keys/{trail.key_id}.json")
    assert trail.key_id in orjson.loads(key["Body"].read())
    assert key["ObjectLockMode"] == "COMPLIANCE"


def test_a_second_trail_start_republishes_the_same_key_without_error(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    with AuditTrail(worm(s3_url, bucket, SegmentFileSink(tmp_path / "t")), SEED) as trail:
        assert trail.record({"action": "read"}) == 1
    with AuditTrail(worm(s3_url, bucket, SegmentFileSink(tmp_path / "t")), SEED) as trail:
        assert trail.record({"action": "read"}) == 3  # after seq 2, the first run's closing checkpoint
    assert len(stored(s3_url, bucket, "trail/acme/public_keys/")) == 1


def test_the_emulator_refuses_deleting_a_locked_version(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    with AuditTrail(worm(s3_url, bucket, MemorySink()), SEED) as trail:
        trail.record({"action": "read"})
    s3 = s3_client(s3_url)
    key = stored(s3_url, bucket, "trail/acme/0")[0]["Key"]
    version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]

    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)
    assert s3.head_object(Bucket=bucket, Key=key, VersionId=version)["ContentLength"] > 0
    # Our module gives no way to try: it has no delete at all.
    assert not [name for name in dir(audit.worm.WormSink) if "delete" in name.lower() or "remove" in name.lower()]


def test_overwriting_an_object_through_the_sink_is_refused_by_our_check(s3_url: str) -> None:
    bucket = make_bucket(s3_url)
    primary = MemorySink()
    sink = worm(s3_url, bucket, primary)
    line = orjson.dumps({"seq": 1, "prev": "0", "hash": "a"})
    sink.append([line])

    sink.append([line])  # the very same bytes again (a retry after a lost answer): accepted, nothing rewritten
    with pytest.raises(AuditIntegrityError) as refused:
        sink.append([orjson.dumps({"seq": 1, "prev": "0", "hash": "b"})])

    assert refused.value.kind == "overwrite"
    versions = s3_client(s3_url).list_object_versions(Bucket=bucket, Prefix="trail/acme/")["Versions"]
    assert len(versions) == 1
    assert primary.lines == [line, line]  # the refused batch never reached the primary either


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"lock": False, "versioning": False}, "versioning Enabled"),
        ({"lock": False, "versioning": True}, "no Object Lock configuration"),
        ({"mode": "GOVERNANCE"}, "COMPLIANCE mode"),
        ({"days": 365}, "below the required 2190"),
    ],
)
def test_a_bucket_not_set_up_for_worm_is_refused_at_construction(
    s3_url: str, setup: dict[str, Any], message: str
) -> None:
    bucket = make_bucket(s3_url, **setup)
    with pytest.raises(AuditConfigError, match=message) as refused:
        worm(s3_url, bucket, MemorySink())
    assert "testing" not in str(refused.value)  # no credentials in the message


def test_a_retention_under_six_years_is_refused(s3_url: str) -> None:
    bucket = make_bucket(s3_url, days=3000)
    with pytest.raises(AuditConfigError, match="2190"):
        worm(s3_url, bucket, MemorySink(), retention_days=2000)
    assert worm(s3_url, bucket, MemorySink(), retention_days=3000) is not None


def test_s3_unreachable_fails_the_append_and_the_callers_record(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    target = urlsplit(s3_url)
    assert target.hostname is not None and target.port is not None
    primary = MemorySink()
    with TcpProxy(target.hostname, target.port) as proxy:
        sink = worm(proxy.url, bucket, primary, timeout_s=1.0)
        trail = AuditTrail(sink, SEED, retry_after_s=0)
        assert trail.record({"action": "read"}) == 1
        proxy.block()

        with pytest.raises(AuditUnavailableError):
            sink.append([orjson.dumps({"seq": 99})])
        with pytest.raises(AuditUnavailableError):
            trail.record({"action": "read"}, timeout=20)
        assert not trail.healthy
        assert len(primary.lines) == 1  # nothing of the failed batches stayed locally

        proxy.unblock()
        assert trail.record({"action": "read"}) == 2
        assert trail.healthy
        trail.close()


def test_s3_unreachable_at_startup_is_unavailable_not_a_config_error(s3_url: str) -> None:
    with TcpProxy("127.0.0.1", 9) as proxy:
        closed = proxy.url
    with pytest.raises(AuditUnavailableError):
        worm(closed, "any-bucket", MemorySink(), timeout_s=0.5)
