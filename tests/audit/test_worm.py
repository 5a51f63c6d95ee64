"""The S3 Object Lock sink against a real moto server on loopback (and a TCP proxy to cut it off)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError

import audit.worm
from audit.errors import AuditConfigError
from audit.segments import SegmentFileSink
from audit.sinks import MemorySink
from audit.trail import AuditTrail
from audit.worm import POSITION_NAME, WormSink
from fhirlake.settings import AuditSettings
from resilience import BreakerState
from security.principal import Role
from telemetry.metrics import REGISTRY
from tests.fixtures.app import TOKEN_URL, make_settings, open_client
from tests.fixtures.canary import Canary
from tests.fixtures.identity import login, register
from tests.fixtures.moto import required_moto
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.wait import wait_for

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


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def drained(sink: WormSink) -> Callable[[], bool]:
    return lambda: sink.backlog() == (0, 0.0)


def worm_failures() -> float:
    return REGISTRY.get_sample_value("fhirlake_audit_sink_failures_total", {"sink": "worm"}) or 0.0


def line(seq: int, tag: str = "a") -> bytes:
    return orjson.dumps({"hash": tag, "prev": "0", "seq": seq})


def proxied(url: str) -> TcpProxy:
    target = urlsplit(url)
    assert target.hostname is not None and target.port is not None
    return TcpProxy(target.hostname, target.port)


def shipped_batches(url: str, bucket: str, prefix: str = "trail/acme/0") -> list[tuple[int, int, bytes]]:
    """``(first, last, body)`` of every batch object, in key order."""
    s3 = s3_client(url)
    found = []
    for obj in stored(url, bucket, prefix):
        first, last = obj["Key"].rsplit("/", 1)[-1].removesuffix(".jsonl").split("-")
        found.append((int(first), int(last), s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
    return found


def assert_copy_matches(url: str, bucket: str, local: list[bytes], prefix: str = "trail/acme/0") -> None:
    """The WORM objects cover seqs 1..N contiguously, in order, and hold exactly the local lines."""
    batches = shipped_batches(url, bucket, prefix)
    expected_first = 1
    for first, last, body in batches:
        assert first == expected_first, "a gap or an overlap between WORM objects"
        assert body.count(b"\n") == last - first + 1
        expected_first = last + 1
    assert expected_first - 1 == len(local)
    assert b"".join(body for *_, body in batches) == b"".join(x + b"\n" for x in local)


class CountingClient:
    """A real S3 client that remembers which objects it was asked to HEAD or PUT."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.touched: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name not in ("head_object", "put_object"):
            return call

        def counted(**kwargs: Any) -> Any:
            self.touched.append((name, kwargs["Key"]))
            return call(**kwargs)

        return counted


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
    sink = worm(s3_url, bucket, MemorySink(), retention_days=3000)
    assert sink.shipping
    sink.close()


def test_an_object_holding_other_bytes_is_never_overwritten_and_stops_the_shipper(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    first = worm(s3_url, bucket, SegmentFileSink(tmp_path / "a"))
    first.append([line(1, "a")])
    first.close()
    assert first.backlog() == (0, 0.0)

    same = worm(s3_url, bucket, SegmentFileSink(tmp_path / "b"))  # the very same bytes again: accepted
    same.append([line(1, "a")])
    wait_until(drained(same))
    same.close()

    other = worm(s3_url, bucket, SegmentFileSink(tmp_path / "c"))
    other.append([line(1, "b")])  # the local write succeeds: the request is answered
    wait_until(lambda: not other.shipping)
    assert other.backlog()[0] == 1  # what could not ship stays visible (and alerts)
    other.close()
    versions = s3_client(s3_url).list_object_versions(Bucket=bucket, Prefix="trail/acme/")["Versions"]
    assert len(versions) == 1
    assert list(SegmentFileSink(tmp_path / "c").read()) == [line(1, "b")]


def test_worm_unreachable_requests_keep_being_recorded_and_the_backlog_drains_when_it_returns(
    s3_url: str, tmp_path: Path
) -> None:
    bucket = make_bucket(s3_url)
    with proxied(s3_url) as proxy:
        sink = worm(proxy.url, bucket, SegmentFileSink(tmp_path / "t"), timeout_s=1.0)
        trail = AuditTrail(sink, SEED, checkpoint_every=5)
        assert trail.record({"action": "read"}) == 1
        wait_until(drained(sink))
        failures = worm_failures()
        proxy.block()

        for n in range(20):
            started = time.monotonic()
            trail.record({"action": "read", "n": n}, timeout=5)
            assert time.monotonic() - started < 0.5
        assert trail.healthy
        wait_until(lambda: sink.breaker.state is BreakerState.OPEN)
        assert worm_failures() > failures
        records, age = sink.backlog()
        assert records >= 20 and age > 0
        assert (REGISTRY.get_sample_value("fhirlake_audit_worm_backlog_records") or 0) >= 20
        assert len(list(sink.read())) >= 21  # records and checkpoints: all local

        proxy.unblock()
        wait_until(drained(sink), timeout=30)
        assert sink.breaker.state is BreakerState.CLOSED
        assert REGISTRY.get_sample_value("fhirlake_audit_worm_backlog_seconds") == 0
        trail.close()  # its final checkpoint ships while closing
    assert_copy_matches(s3_url, bucket, list(SegmentFileSink(tmp_path / "t").read()))


def test_a_restart_backfills_from_the_saved_position_without_reshipping(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    with proxied(s3_url) as proxy:
        sink = worm(proxy.url, bucket, SegmentFileSink(tmp_path / "t"), timeout_s=1.0, drain_timeout_s=0.5)
        sink.append([line(1), line(2)])
        wait_until(drained(sink))
        sink.append([line(3)])
        wait_until(drained(sink))
        proxy.block()
        sink.append([line(4), line(5)])
        sink.append([line(6)])
        started = time.monotonic()
        sink.close()  # the bucket is down: the drain gives up in time, the lines wait on disk
        assert time.monotonic() - started < 5
    assert orjson.loads((tmp_path / "t" / POSITION_NAME).read_bytes())["seq"] == 3

    client = CountingClient(s3_client(s3_url))
    reopened = worm(s3_url, bucket, SegmentFileSink(tmp_path / "t"), client=client)
    assert reopened.backlog()[0] == 3
    wait_until(drained(reopened))
    reopened.close()
    shipped_before = {sink.key_for(f"{a:012d}-{b:012d}.jsonl") for a, b in ((1, 2), (3, 3))}
    assert not {key for _, key in client.touched} & shipped_before
    assert [op for op, key in client.touched if key.endswith(".jsonl")] == ["head_object", "put_object"]
    assert_copy_matches(s3_url, bucket, [line(n) for n in range(1, 7)])


@pytest.mark.parametrize("position", ["lost", "unreadable"])
def test_a_crash_after_a_put_reships_the_same_range_and_the_head_check_accepts_it(
    s3_url: str, tmp_path: Path, position: str
) -> None:
    bucket = make_bucket(s3_url)
    sink = worm(s3_url, bucket, SegmentFileSink(tmp_path / "t"))
    sink.append([line(1), line(2), line(3)])
    wait_until(drained(sink))
    sink.close()
    saved = tmp_path / "t" / POSITION_NAME
    if position == "lost":
        saved.unlink()  # as if the process died between the PUT and the save
    else:
        saved.write_bytes(b"{torn")

    reopened = worm(s3_url, bucket, SegmentFileSink(tmp_path / "t"))
    reopened.append([line(4)])
    wait_until(drained(reopened))
    reopened.close()
    assert [(a, b) for a, b, _ in shipped_batches(s3_url, bucket)] == [(1, 3), (4, 4)]
    assert len(s3_client(s3_url).list_object_versions(Bucket=bucket, Prefix="trail/acme/0")["Versions"]) == 2


def test_s3_unreachable_at_startup_starts_degraded_and_ships_once_it_answers(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    with proxied(s3_url) as proxy:
        proxy.block()
        failures = worm_failures()
        sink = worm(proxy.url, bucket, SegmentFileSink(tmp_path / "t"), timeout_s=0.5)
        assert worm_failures() > failures
        with AuditTrail(sink, SEED) as trail:
            assert trail.record({"action": "read"}) == 1
            assert sink.backlog()[0] == 1
            proxy.unblock()
            wait_until(drained(sink))
            assert stored(s3_url, bucket, f"trail/acme/public_keys/{trail.key_id}.json")
    assert_copy_matches(s3_url, bucket, list(SegmentFileSink(tmp_path / "t").read()))


def test_a_misconfigured_bucket_found_after_a_degraded_start_stops_shipping(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url, mode="GOVERNANCE")
    with proxied(s3_url) as proxy:
        proxy.block()
        sink = worm(proxy.url, bucket, SegmentFileSink(tmp_path / "t"), timeout_s=0.5)
        sink.append([line(1)])
        proxy.unblock()
        wait_until(lambda: not sink.shipping, timeout=30)
        assert sink.backlog()[0] == 1
        sink.close()
    assert not stored(s3_url, bucket, "trail/acme/")


def test_the_gateway_answers_while_the_worm_bucket_is_unreachable(s3_url: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_url)
    with proxied(s3_url) as proxy:
        base = make_settings(tmp_path / "data")
        settings = base.model_copy(update={"audit": AuditSettings(worm_bucket=bucket, worm_endpoint_url=proxy.url)})
        with open_client(settings) as client:
            proxy.block()
            for _ in range(5):
                started = time.monotonic()
                assert client.get("/fhir/metadata").status_code == 200
                assert time.monotonic() - started < 2
            canary = Canary()
            written = client.post("/fhir", content=canary.bundle_bytes())
            assert written.status_code == 200, written.text  # PHI writes and reads go on, audited locally
            patient = written.json()["entry"][0]["response"]["location"].split("/_history")[0]
            assert canary.s("Family") in client.get(f"/fhir/{patient}").text
            assert (REGISTRY.get_sample_value("fhirlake_audit_worm_backlog_records") or 0) >= 5
            assert wait_for(lambda: client.get("/readyz").json()["dependencies"]["audit_worm"]["breaker"] == "open")
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"  # serving, and alerting
            assert ready.json()["dependencies"]["audit_worm"]["backlog_records"] >= 5
            ops = login(client, register(settings.data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
            metrics = client.get("/metrics", headers=ops).text
            assert 'fhirlake_circuit_breaker_state{dependency="audit_worm"} 2.0' in metrics
            assert "Cnry" not in metrics
            proxy.unblock()
            assert wait_for(lambda: client.get("/readyz").json()["status"] == "ready", timeout=30)
    trail = SegmentFileSink(settings.data_dir / "audit" / "trail-1")
    local = list(trail.read())
    trail.close()
    assert_copy_matches(s3_url, bucket, local, prefix=f"audit/{settings.tenant}/trail-1/0")
