"""The audit mirror: trail records land in the Iceberg audit table exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from audit.events import AuditAction, audit_event
from audit.mirror import AuditMirror
from audit.segments import SegmentFileSink
from audit.trail import AuditTrail
from lake.audit_table import APPEND_ONLY_PROPERTY, AuditRow, AuditTable, is_append_only
from lake.catalog import LakeCatalog
from lake.errors import LakeDataError

SEED = bytes(32)
KEYS = ["9f86d081884c7d659a2feaa0c55ad015", "2c26b46b68ffc68ff99b453c1d304134"]


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[AuditTrail]:
    with AuditTrail(SegmentFileSink(tmp_path / "audit" / "trail-1"), seed=SEED, checkpoint_every=5) as t:
        yield t


@pytest.fixture
def table(tmp_path: Path) -> AuditTable:
    audit_table = AuditTable(LakeCatalog.embedded(tmp_path / "lake"))
    audit_table.ensure()
    return audit_table


def record(trail: AuditTrail, i: int) -> int:
    act = AuditAction.SEARCH if i % 2 else AuditAction.READ
    event = audit_event(
        act,
        client_id="emr-1",
        user="Practitioner/p1",
        role="doctor",
        patient_keys=[KEYS[i % 2]],
        resources=[f"Observation/o{i}"],
        purpose_of_use=["TREAT"],
    )
    return trail.record(event, timeout=10)


def scanned(table: AuditTable) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = table.table().scan().to_arrow().sort_by("seq").to_pylist()
    return rows


def test_run_once_mirrors_each_event_exactly_once(tmp_path: Path, trail: AuditTrail, table: AuditTable) -> None:
    seqs = [record(trail, i) for i in range(7)]
    mirror = AuditMirror(tmp_path / "audit", table)

    assert mirror.run_once() == 7
    assert mirror.run_once() == 0  # nothing new: no duplicates
    rows = scanned(table)
    assert [r["seq"] for r in rows] == seqs  # checkpoint records (seq 6) are not events
    assert [r["action"] for r in rows] == ["search" if i % 2 else "read" for i in range(7)]
    assert [r["patient_keys"] for r in rows] == [[KEYS[i % 2]] for i in range(7)]
    assert [r["resources"] for r in rows] == [[f"Observation/o{i}"] for i in range(7)]
    assert {r["trail"] for r in rows} == {"trail-1"}
    assert {(r["client_id"], r["fhir_user"], r["role"]) for r in rows} == {("emr-1", "Practitioner/p1", "doctor")}
    assert all(r["purpose_of_use"] == ["TREAT"] for r in rows)
    assert table.mirrored_seq("trail-1") == seqs[-1]

    more = [record(trail, i) for i in range(7, 10)]
    assert mirror.run_once() == 3
    assert mirror.run_once() == 0
    assert [r["seq"] for r in scanned(table)] == seqs + more


def test_rows_carry_the_stored_event_and_hash(tmp_path: Path, trail: AuditTrail, table: AuditTable) -> None:
    record(trail, 0)
    trail.close()
    AuditMirror(tmp_path / "audit", table).run_once()
    line = (tmp_path / "audit" / "trail-1" / "segment-000001.log").read_bytes().splitlines()[0]
    stored = orjson.loads(line)
    (row,) = scanned(table)
    assert row["hash"] == stored["hash"]
    assert orjson.loads(str(row["event"])) == stored["event"]
    assert str(row["event"]).encode() in line  # the canonical bytes the chain hashed


def test_table_is_append_only_and_resists_replays(table: AuditTable) -> None:
    assert table.table().properties[APPEND_ONLY_PROPERTY] == "true"
    assert is_append_only(table.table())
    assert table.table().format_version == 2
    assert not hasattr(table, "delete") and not hasattr(table, "overwrite")

    table.ensure()  # idempotent
    row = AuditRow(
        trail="trail-9",
        seq=3,
        hash="0" * 64,
        recorded=datetime(2026, 3, 1, 12, tzinfo=UTC),
        action="read",
        outcome="0",
        client_id=None,
        role=None,
        fhir_user=None,
        event="{}",
        patient_keys=[KEYS[0]],
    )
    assert table.append([row], "trail-9", 3) == 1
    assert table.append([row], "trail-9", 3) == 0  # a replayed commit appends nothing
    assert len(scanned(table)) == 1
    with pytest.raises(LakeDataError):
        table.append([row], "trail-8", 3)
    with pytest.raises(LakeDataError):
        table.mirrored_seq("../etc")


def test_thread_mirrors_in_the_background(tmp_path: Path, trail: AuditTrail, table: AuditTable) -> None:
    mirror = AuditMirror(tmp_path / "audit", table, interval_s=0.05)
    mirror.start()
    try:
        seqs = [record(trail, i) for i in range(3)]
        deadline = time.monotonic() + 10
        while table.mirrored_seq("trail-1") < seqs[-1] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        mirror.stop()
    assert [r["seq"] for r in scanned(table)] == seqs
    assert mirror.last_error is None


def test_thread_survives_a_broken_trail(tmp_path: Path, trail: AuditTrail, table: AuditTable) -> None:
    broken = tmp_path / "audit" / "trail-0"
    broken.mkdir(parents=True)
    (broken / "segment-000001.log").write_bytes(b"not json\n")
    seq = record(trail, 0)
    mirror = AuditMirror(tmp_path / "audit", table, interval_s=0.05)
    mirror.start()
    try:
        deadline = time.monotonic() + 10
        while table.mirrored_seq("trail-1") < seq and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        mirror.stop()
    assert table.mirrored_seq("trail-1") == seq  # the healthy trail is mirrored regardless
    assert mirror.last_error == "AuditIntegrityError"
