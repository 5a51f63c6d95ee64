"""Compaction while the writer keeps committing: both succeed, no row is lost or doubled."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from lake.maintenance import compact_table, maintain
from lake.schema import all_tables, table_for
from tests.fixtures.app import container_of, flush_lake
from tests.fixtures.data import synthea_paths
from tests.fixtures.rekey import rekey


def test_compaction_and_ingest_interleave(client: TestClient) -> None:
    container = container_of(client)
    container.lake_writer.stop(drain=False)
    source = synthea_paths()[0].read_bytes()
    posted = 0
    for _ in range(6):
        body, _, entries = rekey(source)
        assert client.post("/fhir", content=body).status_code == 200
        posted += entries
        flush_lake(client)

    errors: list[BaseException] = []

    def compact_all() -> None:
        try:
            for _ in range(3):
                for name in all_tables():
                    compact_table(container.catalog, name, min_files=2, target_rows=1_000_000)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=compact_all)
    worker.start()
    while worker.is_alive():
        body, _, entries = rekey(source)
        assert client.post("/fhir", content=body).status_code == 200
        posted += entries
        flush_lake(client)
    worker.join()
    assert errors == []
    maintain(container.catalog, snapshot_retention_s=0, min_files=2, target_rows=1_000_000)

    reader = container.lake_reader
    keys: list[tuple[str, int]] = []
    for name in all_tables():
        data = reader.scan(name, ("id", "version"))
        keys += list(zip(data.column("id").to_pylist(), data.column("version").to_pylist(), strict=True))
    assert len(keys) == posted
    assert len(set(keys)) == posted
    assert table_for("Observation") in all_tables()


def test_existing_tables_get_current_properties(client: TestClient) -> None:
    catalog = container_of(client).catalog
    table = catalog.table("observation", fresh=True)
    with table.transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": "10"})
    catalog.ensure_tables()
    assert catalog.table("observation", fresh=True).properties["commit.retry.num-retries"] == "0"
