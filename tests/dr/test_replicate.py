"""Replication rounds: crash and resume, corruption caught by verify, shredding and fencing across a failover."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dr.errors import RegionFencedError, ReplicationError
from dr.failover import failover
from dr.lag import prometheus_text, replication_lag
from dr.region import RegionGuard, region, regions
from dr.replicate import Replicator, open_lake, open_state, replicate_once
from dr.verify import verify_region, verify_tables
from fhirlake.settings import Settings
from lake.replica import file_io, live_files, metadata_doc, rows_digest
from tests.dr.support import Callers, gateway, post_canary
from tests.fixtures.app import container_of, flush_lake, make_settings


class Crash(Exception):
    """Stands for the process dying at a named point of a round."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


def _crash_at(point: str, after: int = 1) -> Any:
    seen = {"n": 0}

    def hook(name: str) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] >= after:
                raise Crash(point)

    return hook


def _table_states(settings: Settings, name: str) -> dict[str, tuple[int | None, int, str]]:
    _, state = open_state(settings, region(settings, name))
    return {t: (s.snapshot_id, s.rows, s.digest) for t, s in state.tables().items()}


def _contents(settings: Settings, name: str) -> dict[str, tuple[int, int]]:
    """Rows and content digest of every table, read through the region's catalog."""
    lake = open_lake(settings, region(settings, name))
    return {
        ident[-1]: rows_digest(lake.catalog.load_table(ident).scan().to_arrow())
        for ident in lake.catalog.list_tables(settings.lake.namespace)
    }


def _shredded(settings: Settings, name: str) -> int:
    path = region(settings, name).keys_dir / "keystore.db"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM shredded").fetchone()[0])


def _consistent(settings: Settings, name: str) -> None:
    """Every table the destination catalog shows references only files that are there."""
    target = region(settings, name)
    fio = file_io(target.warehouse)
    lake = open_lake(settings, target)
    for ident in lake.catalog.list_tables(settings.lake.namespace):
        doc = metadata_doc(fio, lake.catalog.load_table(ident).metadata_location)
        for path, _ in live_files(fio, doc):
            assert fio.new_input(path).exists(), path
    # Before any committed round there is nothing to verify ("tables": no state recorded yet).
    assert [c.name for c in verify_tables(settings, target) if not c.ok] in ([], ["tables"]), name


@pytest.mark.parametrize(("point", "after"), [("table-copied", 3), ("before-commit", 1), ("after-commit", 1)])
def test_a_round_killed_half_way_resumes_to_the_same_result(settings: Settings, point: str, after: int) -> None:
    primary, secondary = regions(settings)
    tertiary = region(settings, "tertiary")  # the same rounds without a crash, for comparison
    with gateway(settings, Callers()) as client:
        post_canary(client)
        Replicator(settings, primary, secondary).run_round()
        Replicator(settings, primary, tertiary).run_round()
        post_canary(client)
        post_canary(client, flush=False)  # accepted, only in the journal
    before = _table_states(settings, "secondary")

    crashed = Replicator(settings, primary, secondary, crash=_crash_at(point, after))
    with pytest.raises(Crash):
        crashed.run_round()
    if point != "after-commit":
        assert _table_states(settings, "secondary") == before  # the old consistent state, never a mix
    _consistent(settings, "secondary")
    resumed = Replicator(settings, primary, secondary).run_round()
    clean = Replicator(settings, primary, tertiary).run_round()

    assert _table_states(settings, "secondary") == _table_states(settings, "tertiary")
    assert _contents(settings, "secondary") == _contents(settings, "tertiary")
    _, state = open_state(settings, secondary)
    _, clean_state = open_state(settings, tertiary)
    assert state.meta()["journal_seq"] == clean_state.meta()["journal_seq"] == 3
    # Nothing copied twice: the interrupted and the resumed round wrote what one clean round wrote.
    assert crashed.copier is not None
    assert crashed.copier.files_copied + resumed.files_copied == clean.files_copied > 0
    assert resumed.files_copied < clean.files_copied or point == "after-commit"
    _consistent(settings, "secondary")


def test_a_corrupted_replicated_data_file_fails_verify_and_is_named(settings: Settings) -> None:
    with gateway(settings, Callers()) as client:
        post_canary(client)
    replicate_once(settings)
    _, secondary = regions(settings)
    assert all(c.ok for c in verify_tables(settings, secondary))
    victim = sorted((secondary.root / "lake" / "warehouse" / "fhir" / "patient" / "data").rglob("*.parquet"))[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))

    failed = [c for c in verify_tables(settings, secondary) if not c.ok]
    assert [c.name for c in failed] == ["table patient"]
    assert victim.name in failed[0].detail and "checksum" in failed[0].detail


def test_shredded_patients_stay_shredded_after_failover(settings: Settings) -> None:
    callers = Callers()
    with gateway(settings, callers) as client:
        before = post_canary(client)
        after = post_canary(client)
        kept = post_canary(client)
        purge = client.post(f"/fhir/{before[0]}/$purge", headers=callers.ops)
        assert purge.status_code == 200, purge.text
        replicate_once(settings)
        # Erased after the last round: the key shred reaches the registered copy at once.
        assert _shredded(settings, "secondary") == 1
        purge = client.post(f"/fhir/{after[0]}/$purge", headers=callers.ops)
        assert purge.status_code == 200
        assert _shredded(settings, "secondary") == 2  # no round ran: the registered copy was reached
    failover(settings)
    with gateway(settings, callers) as client:
        for ref in before[:-1] + after[:-1]:  # the practitioner (last) is not the patient's record
            reply = client.get(f"/fhir/{ref}")
            assert reply.status_code == 410, (ref, reply.text)
        for ref in kept:
            assert client.get(f"/fhir/{ref}").status_code == 200, ref
    _, secondary = regions(settings)
    assert [c.name for c in verify_region(settings, secondary) if not c.ok] == []


def test_failover_fences_the_old_primary(settings: Settings) -> None:
    callers = Callers()
    with gateway(settings, callers) as client:
        post_canary(client)
        replicate_once(settings)
        primary, _ = regions(settings)
        guard = RegionGuard(settings, primary)
        guard.check()
        failover(settings)
        with pytest.raises(RegionFencedError):
            guard.check()
        reply = client.post("/fhir", content=b'{"resourceType":"Bundle","type":"batch","entry":[]}')
        assert reply.status_code == 503, reply.text  # the old primary acknowledges nothing any more
        assert reply.json()["resourceType"] == "OperationOutcome"
        assert not container_of(client).ready()
    with pytest.raises(RegionFencedError):
        RegionGuard(settings, primary).check()


def test_status_reports_lag_per_table_and_journal(settings: Settings) -> None:
    with gateway(settings, Callers()) as client:
        post_canary(client)
        replicate_once(settings)
        assert replication_lag(settings)["tables"]["patient"]["snapshots_behind"] == 0
        post_canary(client)
        post_canary(client, flush=False)
        lag = replication_lag(settings)
        assert lag["tables"]["patient"]["snapshots_behind"] >= 1
        assert lag["tables"]["patient"]["seconds_behind"] >= 0
        assert lag["journal"]["transactions_behind"] == 2
        flush_lake(client)  # the gateway's writer must not commit between the round and the reading
        replicate_once(settings)
        lag = replication_lag(settings)
    assert lag["tables"]["patient"]["snapshots_behind"] == 0
    assert lag["journal"]["transactions_behind"] == 0 and lag["journal"]["seconds_behind"] == 0
    metrics = prometheus_text(lag)
    assert 'fhirlake_dr_snapshots_behind{table="patient"} 0' in metrics
    assert "fhirlake_dr_journal_transactions_behind 0" in metrics


@pytest.mark.slow
def test_a_replicate_process_killed_mid_copy_resumes_to_the_same_result(settings: Settings) -> None:
    """``fhirlake dr replicate`` in a child process gets SIGKILL while it copies files."""
    import os
    import signal
    import subprocess
    import sys
    import time

    primary, secondary = regions(settings)
    with gateway(settings, Callers()) as client:
        for _ in range(6):  # six snapshots per table: enough files that the copy takes a while
            post_canary(client)
    catalog_db = secondary.root / "lake" / "catalog.db"
    env = {**os.environ, "FHIRLAKE_DATA_DIR": str(settings.data_dir), "FHIRLAKE_LOG_JSON": "false"}
    child = subprocess.Popen(
        [sys.executable, "-m", "fhirlake.cli", "dr", "replicate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    copied = 0
    deadline = time.monotonic() + 60
    while copied < 20 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
        if catalog_db.exists():
            with closing(sqlite3.connect(f"file:{catalog_db}?mode=ro", uri=True, timeout=5)) as conn:
                try:
                    copied = conn.execute("SELECT COUNT(*) FROM dr_files").fetchone()[0]
                except sqlite3.OperationalError:
                    copied = 0
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert copied >= 20, "the child finished before it could be killed mid-copy"
    _, state = open_state(settings, secondary)
    assert state.meta().get("generation", 0) == 0  # killed before its commit: nothing advanced
    assert state.tables() == {}
    _consistent(settings, "secondary")  # no table is visible half-copied

    resumed = Replicator(settings, primary, secondary).run_round()
    clean = Replicator(settings, primary, region(settings, "tertiary")).run_round()
    assert _table_states(settings, "secondary") == _table_states(settings, "tertiary")
    assert _contents(settings, "secondary") == _contents(settings, "tertiary")
    assert resumed.files_copied + copied <= clean.files_copied + 1  # at most the one file in flight again
    assert resumed.files_skipped >= copied - 1


def test_a_round_still_in_flight_cannot_commit_into_a_promoted_region(settings: Settings) -> None:
    primary, secondary = regions(settings)
    with gateway(settings, Callers()) as client:
        post_canary(client)
        replicate_once(settings)
        post_canary(client)
    promoted_tables = _table_states(settings, "secondary")
    late = Replicator(settings, primary, secondary, crash=lambda point: _failover_at(settings, point))
    with pytest.raises(ReplicationError):
        late.run_round()  # it copied its files, then the secondary was promoted under it
    assert _table_states(settings, "secondary") == promoted_tables
    _consistent(settings, "secondary")


def _failover_at(settings: Settings, point: str) -> None:
    if point == "before-commit":
        failover(settings)


def test_the_metrics_endpoint_shows_the_lag(settings: Settings) -> None:
    from security.principal import Role
    from tests.fixtures.app import TOKEN_URL
    from tests.fixtures.identity import login, register

    with gateway(settings, Callers()) as client:
        ops = login(client, register(settings.data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
        assert client.get("/metrics", headers=ops).status_code == 200
        post_canary(client)
        replicate_once(settings)
        post_canary(client)
        text = client.get("/metrics", headers=ops).text
    behind = next(
        line for line in text.splitlines() if line.startswith('fhirlake_dr_snapshots_behind{table="patient"}')
    )
    assert int(behind.split()[-1]) >= 1
