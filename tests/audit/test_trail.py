"""The audit trail: durable group commit, checkpoints, resume, failure handling, and the event builder."""

from __future__ import annotations

import base64
import errno
import os
import stat
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit.errors import AuditConfigError, AuditEventError, AuditIntegrityError, AuditUnavailableError
from audit.events import AuditAction, Outcome, audit_event, outcome_of
from audit.sinks import MemorySink, SegmentFileSink, load_sink
from audit.trail import AuditTrail
from audit.verify import verify, verify_chain

SEED = bytes(range(32))
PATIENT_KEY = "9f86d081884c7d659a2feaa0c55ad015"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingSink(MemorySink):
    """Counts every append attempt, including those that fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def append(self, lines: Sequence[bytes], checkpoints: Sequence[bytes] = ()) -> None:
        self.calls += 1
        super().append(lines, checkpoints)


def event(i: int = 0) -> dict[str, Any]:
    return audit_event(AuditAction.READ, client_id="emr-1", resources=[f"Observation/o{i}"], patient_keys=[PATIENT_KEY])


def kinds(sink: MemorySink) -> list[str]:
    return ["checkpoint" if line.startswith(b'{"checkpoint"') else "event" for line in sink.lines]


def check(sink: MemorySink) -> None:
    report = verify_chain([("memory", sink.lines)], sink.checkpoints, sink.keys)
    assert report.ok, report.first_error


# -- the event builder ---------------------------------------------------------------------------


def test_audit_event_is_a_balp_shaped_auditevent() -> None:
    recorded = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    doc = audit_event(
        AuditAction.SEARCH,
        outcome=outcome_of(403),
        outcome_code="forbidden",
        client_id="emr-1",
        user="Practitioner/p1",
        role="clinician",
        address="10.0.0.7",
        cert_subject="CN=emr-1,O=General Hospital",
        site="tenant-a",
        patient_keys=[PATIENT_KEY],
        query="/Observation?patient=&code=",
        purpose_of_use=["TREAT"],
        recorded=recorded,
    )
    assert doc["resourceType"] == "AuditEvent"
    assert doc["type"]["code"] == "rest" and doc["action"] == "E" and doc["outcome"] == "4"
    assert {"system": "urn:fhirlake:audit-action", "code": "search"} in doc["subtype"]
    assert doc["recorded"] == "2026-03-01T10:00:00.000Z"
    user, client = doc["agent"]
    assert user["who"] == {"reference": "Practitioner/p1"} and user["requestor"] is True
    assert user["role"][0]["coding"][0]["code"] == "clinician"
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert client["network"] == {"address": "10.0.0.7", "type": "2"} and client["requestor"] is False
    assert client["who"]["identifier"]["value"] == "emr-1" and client["altId"] == "CN=emr-1,O=General Hospital"
    assert doc["source"]["site"] == "tenant-a" and doc["source"]["observer"] == {"display": "fhirlake"}
    assert doc["entity"][0]["what"]["identifier"] == {"system": "urn:fhirlake:patient-key", "value": PATIENT_KEY}
    assert base64.b64decode(doc["entity"][1]["query"]) == b"/Observation?patient=&code="
    assert doc["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"


def test_without_a_user_the_client_is_the_requestor() -> None:
    doc = audit_event(AuditAction.TOKEN, client_id="backend-1", role="system")
    assert [agent["requestor"] for agent in doc["agent"]] == [True]
    assert doc["type"]["code"] == "110114"


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("patient_keys", ["12345"]),  # a patient id, not a pseudonym
        ("resources", ["Patient/John Smith"]),
        ("address", "jsmith-laptop.example.org"),
        ("query", "/Patient?name=John\nSmith"),
        ("user", "john.smith@example.org"),
        ("purpose_of_use", ["treatment of John"]),
    ],
)
def test_audit_event_refuses_free_text_and_never_echoes_it(argument: str, value: Any) -> None:
    with pytest.raises(AuditEventError) as exc:
        audit_event(AuditAction.READ, **{argument: value})
    assert "John" not in exc.value.message and "jsmith" not in exc.value.message and "12345" not in exc.value.message


def test_audit_event_refuses_a_naive_time() -> None:
    with pytest.raises(AuditEventError):
        audit_event(AuditAction.READ, recorded=datetime(2026, 1, 1))


def test_outcomes_follow_http_status() -> None:
    assert [outcome_of(s) for s in (200, 201, 404, 503)] == [
        Outcome.SUCCESS,
        Outcome.SUCCESS,
        Outcome.MINOR_FAILURE,
        Outcome.SERIOUS_FAILURE,
    ]


# -- recording ------------------------------------------------------------------------------------


def test_records_come_back_in_order_with_their_seq() -> None:
    sink, events = MemorySink(), [event(i) for i in range(5)]
    with AuditTrail(sink, SEED) as trail:
        seqs = [trail.record(e) for e in events]
    assert seqs == [1, 2, 3, 4, 5]
    stored = [orjson.loads(line) for line in sink.lines]
    assert [r["event"] for r in stored[:5]] == events
    assert "checkpoint" in stored[5]  # close() seals the chain
    check(sink)


def test_a_reopened_trail_continues_the_chain(tmp_path: Path) -> None:
    with AuditTrail(SegmentFileSink(tmp_path), SEED) as trail:
        assert [trail.record(event(i)) for i in range(3)] == [1, 2, 3]
    with AuditTrail(SegmentFileSink(tmp_path), SEED) as trail:
        assert trail.head[0] == 4
        assert trail.record(event(3)) == 5
    report = verify(tmp_path)
    assert report.ok and (report.records, report.checkpoints, report.head_seq) == (4, 2, 6)


def test_a_chain_left_unsealed_by_a_crash_is_sealed_on_reopen() -> None:
    sink = MemorySink()
    with AuditTrail(sink, SEED) as trail:
        for i in range(3):
            trail.record(event(i))
    del sink.lines[-1], sink.checkpoints[-1]  # as if the process died before close()
    with AuditTrail(sink, SEED):
        deadline = time.monotonic() + 5
        while len(sink.lines) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kinds(sink) == ["event"] * 3 + ["checkpoint"]
    check(sink)


def test_a_torn_line_left_by_a_crash_is_cut_on_reopen(tmp_path: Path) -> None:
    with AuditTrail(SegmentFileSink(tmp_path), SEED) as trail:
        trail.record(event(0))
    with (tmp_path / "segment-000001.log").open("ab") as f:
        f.write(b'{"event":{"act')
    with AuditTrail(SegmentFileSink(tmp_path), SEED) as trail:
        assert trail.record(event(1)) == 3
    report = verify(tmp_path)
    assert report.ok and not report.torn_tail and report.records == 2


def test_a_trail_whose_tail_was_tampered_with_refuses_to_open() -> None:
    sink = MemorySink()
    with AuditTrail(sink, SEED) as trail:
        for i in range(3):
            trail.record(event(i))
    sink.lines[1] = sink.lines[1].replace(b"Observation/o1", b"Observation/o9")
    with pytest.raises(AuditIntegrityError):
        AuditTrail(sink, SEED)


def test_concurrent_submits_keep_a_gapless_chain_in_few_appends(tmp_path: Path) -> None:
    class Counting(SegmentFileSink):
        appends = 0

        def append(self, lines: Sequence[bytes], checkpoints: Sequence[bytes] = ()) -> None:
            Counting.appends += 1
            super().append(lines, checkpoints)

    seqs: list[int] = []
    with AuditTrail(Counting(tmp_path), SEED, checkpoint_every=50) as trail:

        def work(n: int) -> None:
            futures = [trail.submit(event(n * 100 + i)) for i in range(100)]
            seqs.extend(f.result() for f in futures)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(set(seqs)) == 800
    report = verify(tmp_path)
    # a checkpoint every 50 records; the last one leaves close() nothing to seal
    assert report.ok and report.records == 800 and report.checkpoints == 16
    assert Counting.appends < 800


def test_a_checkpoint_follows_every_n_records() -> None:
    sink = MemorySink()
    with AuditTrail(sink, SEED, checkpoint_every=4) as trail:
        seqs = [trail.record(event(i)) for i in range(10)]
    assert seqs == [1, 2, 3, 4, 6, 7, 8, 9, 11, 12]
    assert kinds(sink) == (["event"] * 4 + ["checkpoint"]) * 2 + ["event"] * 2 + ["checkpoint"]
    assert len(sink.checkpoints) == 3
    check(sink)


def test_a_checkpoint_follows_when_the_interval_has_passed() -> None:
    sink, clock = MemorySink(), FakeClock()
    with AuditTrail(sink, SEED, checkpoint_every=1000, checkpoint_interval_s=60, clock=clock) as trail:
        trail.record(event(0))
        clock.now += 30
        trail.record(event(1))
        assert kinds(sink) == ["event", "event"]
        clock.now += 31
        trail.record(event(2))
        assert kinds(sink) == ["event", "event", "event", "checkpoint"]
        assert orjson.loads(sink.lines[-1])["checkpoint"]["time"] == "2027-01-15T08:01:01.000Z"
        trail.record(event(3))
        clock.now += 61  # idle: the writer seals the waiting record on its own
        deadline = time.monotonic() + 5
        while len(sink.lines) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kinds(sink)[-2:] == ["event", "checkpoint"]
    check(sink)


def test_close_seals_once_and_a_closed_trail_refuses_records() -> None:
    sink = MemorySink()
    trail = AuditTrail(sink, SEED)
    trail.record(event(0))
    trail.close()
    assert kinds(sink) == ["event", "checkpoint"]
    with pytest.raises(AuditUnavailableError):
        trail.record(event(1))
    AuditTrail(sink, SEED).close()  # nothing new to seal
    assert len(sink.lines) == 2


# -- failures -------------------------------------------------------------------------------------


def test_a_failing_sink_fails_the_caller_and_does_not_advance_the_chain() -> None:
    sink = CountingSink()
    trail = AuditTrail(sink, SEED, retry_after_s=0.2)
    assert trail.record(event(0)) == 1
    sink.failure = OSError(errno.EIO, "disk gone")
    with pytest.raises(AuditUnavailableError) as exc:
        trail.record(event(1))
    assert exc.value.code == "audit-unavailable" and not trail.healthy
    assert trail.head[0] == 1 and len(sink.lines) == 1
    calls = sink.calls
    with pytest.raises(AuditUnavailableError):  # fails fast: the sink is not even asked
        trail.record(event(2))
    assert sink.calls == calls
    sink.failure = None
    time.sleep(0.25)
    assert trail.record(event(3)) == 2 and trail.healthy
    trail.close()
    check(sink)


def test_a_failed_fsync_leaves_nothing_of_the_batch_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trail = AuditTrail(SegmentFileSink(tmp_path), SEED, retry_after_s=0)
    trail.record(event(0))
    segment = tmp_path / "segment-000001.log"
    size = segment.stat().st_size
    real_fsync, failures = os.fsync, [OSError(errno.EIO, "I/O error")]

    def flaky_fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    with pytest.raises(AuditUnavailableError):
        trail.record(event(1))
    assert segment.stat().st_size == size
    assert trail.record(event(2)) == 2
    trail.close()
    report = verify(tmp_path)
    assert report.ok and report.records == 2


def _unwritable(directory: Path, aside: Path) -> None:
    if os.geteuid() == 0:  # root ignores permissions: take the directory away instead
        directory.rename(aside)
    else:
        directory.chmod(0o500)


def _writable(directory: Path, aside: Path) -> None:
    if aside.exists():
        aside.rename(directory)
    directory.chmod(0o700)


def test_an_unwritable_directory_fails_callers_until_it_is_writable_again(tmp_path: Path) -> None:
    directory, aside = tmp_path / "audit", tmp_path / "aside"
    trail = AuditTrail(SegmentFileSink(directory, segment_bytes=1), SEED, retry_after_s=0)  # every append rotates
    assert trail.record(event(0)) == 1
    _unwritable(directory, aside)
    try:
        with pytest.raises(AuditUnavailableError):
            trail.record(event(1))
        assert trail.head[0] == 1
    finally:
        _writable(directory, aside)
    assert trail.record(event(2)) == 2
    trail.close()
    report = verify(directory)
    assert report.ok and report.records == 2 and report.segments == 3


def test_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir(mode=0o755)
    with AuditTrail(SegmentFileSink(directory), SEED) as trail:
        trail.record(event(0))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["checkpoints.log", "public_keys.json", "segment-000001.log"]
    assert {stat.S_IMODE((directory / n).stat().st_mode) for n in names} == {0o600}


def test_the_public_key_is_published_under_its_key_id(tmp_path: Path) -> None:
    with AuditTrail(SegmentFileSink(tmp_path), SEED) as trail:
        key_id = trail.key_id
    keys = orjson.loads((tmp_path / "public_keys.json").read_bytes())
    assert list(keys) == [key_id] and keys[key_id]["algorithm"] == "Ed25519"
    assert SEED.hex() not in (tmp_path / "public_keys.json").read_text()


# -- misuse ---------------------------------------------------------------------------------------


def test_events_must_be_json_mappings() -> None:
    with AuditTrail(MemorySink(), SEED) as trail:
        with pytest.raises(AuditEventError):
            trail.submit({"recorded": object()})
        with pytest.raises(AuditEventError):
            trail.submit([1, 2])  # type: ignore[arg-type]


def test_configuration_errors() -> None:
    with pytest.raises(AuditConfigError):
        AuditTrail(MemorySink(), b"short")
    with pytest.raises(AuditConfigError):
        AuditTrail(MemorySink(), SEED, checkpoint_every=0)
    assert load_sink("file") is SegmentFileSink and load_sink("memory") is MemorySink
    with pytest.raises(AuditConfigError):
        load_sink("tape")


def test_recorded_defaults_to_now_in_utc() -> None:
    doc = audit_event(AuditAction.CLI)
    recorded = datetime.fromisoformat(doc["recorded"].replace("Z", "+00:00"))
    assert doc["recorded"].endswith("Z") and abs(recorded - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with AuditTrail(SegmentFileSink(tmp_path), SEED) as trail:
        trail.record(event(0))
        with pytest.raises(AuditConfigError):
            SegmentFileSink(tmp_path)
    assert verify(tmp_path).ok


def test_a_trail_spread_over_segments_resumes_from_the_last_one(tmp_path: Path) -> None:
    with AuditTrail(SegmentFileSink(tmp_path, segment_bytes=2048), SEED) as trail:
        for i in range(6):
            trail.record(event(i))
    with AuditTrail(SegmentFileSink(tmp_path, segment_bytes=2048), SEED) as trail:
        assert trail.record(event(6)) == 8
    report = verify(tmp_path)
    assert report.ok and report.records == 7 and report.segments >= 6
