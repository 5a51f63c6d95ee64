"""Group commit into Iceberg: many transactions per commit, each row exactly once."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from lake.schema import all_tables
from tests.fixtures.app import container_of, flush_lake
from tests.fixtures.data import synthea_paths


def _rows(client: TestClient) -> int:
    reader = container_of(client).lake_reader
    return sum(reader.scan(t, ("id",)).num_rows for t in all_tables())


def test_many_requests_share_one_commit_per_table(client: TestClient) -> None:
    container = container_of(client)
    container.lake_writer.stop(drain=False)  # hold the background thread; flush by hand
    posted = 0
    for path in synthea_paths()[:5]:
        reply = client.post("/fhir", content=path.read_bytes())
        posted += len(reply.json()["entry"])
    flush_lake(client)
    stats = container.lake_writer.stats
    assert stats.rows == posted
    assert stats.windows == 1  # five requests, one window
    assert stats.commits <= len(all_tables())
    assert _rows(client) == posted


def test_a_writer_restarted_mid_window_writes_nothing_twice(client: TestClient) -> None:
    container = container_of(client)
    container.lake_writer.stop(drain=False)
    posted = sum(len(client.post("/fhir", content=p.read_bytes()).json()["entry"]) for p in synthea_paths()[:2])
    flush_lake(client)
    # Simulate a crash after the table commits but before the journal learned about them.
    container.journal.mark_committed(0)
    assert flush_lake(client) == 0
    assert _rows(client) == posted


def test_maintenance_compacts_and_keeps_every_row(client: TestClient, tmp_path: Path) -> None:
    from lake.maintenance import maintain

    container = container_of(client)
    for path in synthea_paths()[:4]:
        client.post("/fhir", content=path.read_bytes())
        flush_lake(client)  # one commit per request: many small files
    before = _rows(client)
    report = maintain(container.catalog, snapshot_retention_s=0, min_files=2, target_rows=1_000_000)
    assert sum(report.files_after.values()) < sum(report.files_before.values())
    assert sum(report.expired_snapshots.values()) > 0
    assert _rows(client) == before
    # Reads still work from compacted files.
    assert client.get("/fhir/Patient?_count=1").json()["total"] == 4


def test_only_the_lock_holder_commits(client: TestClient, tmp_path: Path) -> None:
    from lake.writer import LakeWriter

    container = container_of(client)
    container.lake_writer.stop(drain=False)
    client.post("/fhir", content=synthea_paths()[0].read_bytes())
    lock = container.settings.data_dir.resolve() / "lake" / "writer.lock"
    holder = LakeWriter(container.catalog, container.journal, lock_path=lock)
    other = LakeWriter(container.catalog, container.journal, lock_path=lock)
    assert holder.holds_lock()
    assert other.flush() == 0  # another process's writer stands by
    assert holder.flush() > 0


def test_background_writer_commits_once_enough_rows_wait(tmp_path: Path) -> None:
    import time

    from tests.fixtures.app import make_settings, open_client

    settings = make_settings(tmp_path / "data", commit_interval_s=3600, commit_min_rows=50)
    with open_client(settings) as client:
        posted = len(client.post("/fhir", content=synthea_paths()[0].read_bytes()).json()["entry"])
        assert posted >= 50
        deadline = time.monotonic() + 30
        while container_of(client).lake_writer.stats.rows < posted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert container_of(client).lake_writer.stats.rows == posted
