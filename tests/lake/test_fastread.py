"""Patient reads through the cached file index agree with a planned Iceberg scan, across commits."""

from __future__ import annotations

from pathlib import Path

import orjson

from lake.schema import table_for
from tests.fixtures.app import container_of, flush_lake, make_settings, open_client
from tests.fixtures.data import synthea_paths


def test_cold_reads_come_from_the_file_index_and_follow_new_commits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", hot_retention_s=0)  # bodies leave the journal once in the lake
    with open_client(settings) as client:
        reply = client.post("/fhir", content=synthea_paths()[0].read_bytes()).json()
        refs = [e["response"]["location"].rsplit("/_history", 1)[0] for e in reply["entry"]]
        flush_lake(client)
        container = container_of(client)
        lake = container.lake_reader
        for ref in refs[:40]:
            rid = ref.split("/")[1]
            assert client.get(f"/fhir/{ref}").json()["id"] == rid
        observation = next(r for r in refs if r.startswith("Observation/")).split("/")[1]
        row = container.journal.current("Observation", observation)
        assert row is not None
        wanted = [(observation, row.version, row.patient_key)]
        table = container.catalog.table(table_for("Observation"))
        fast = lake._index.read(table_for("Observation"), table, wanted)  # the index itself
        assert fast is not None and list(fast) == [(observation, 1)]
        doc = client.get(f"/fhir/Observation/{observation}").json()
        doc["status"] = "amended"
        assert client.put(f"/fhir/Observation/{observation}", content=orjson.dumps(doc)).status_code == 200
        flush_lake(client)  # a new commit, a new metadata location: the index reloads its files
        assert client.get(f"/fhir/Observation/{observation}").json()["status"] == "amended"
        assert client.get(f"/fhir/Observation/{observation}/_history/1").json()["status"] != "amended"
        assert container.journal.version("Observation", observation, 2)[13] is None  # really from the lake
