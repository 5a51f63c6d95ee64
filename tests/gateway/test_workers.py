"""Several gateway processes share one journal and one lake; one of them commits to Iceberg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirlake.bootstrap import open_catalog
from lake.reader import LakeReader
from lake.schema import all_tables
from tests.fixtures.app import make_settings
from tests.fixtures.data import synthea_paths
from tests.fixtures.rekey import rekey


@pytest.mark.slow
def test_two_gateway_processes_accept_and_drain_everything(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(
        data_dir, "--workers", "2", FHIRLAKE_INGEST__VALIDATION_WORKERS="0", FHIRLAKE_LAKE__HOT_RETENTION_S="0"
    )
    server.start()
    posted, locations = 0, []
    with httpx.Client(timeout=60, headers={"Content-Type": "application/fhir+json", **server.headers()}) as http:
        for path in synthea_paths()[:6]:
            body, _, entries = rekey(path.read_bytes())
            reply = http.post(server.base, content=body)
            assert reply.status_code == 200
            posted += entries
            locations += [e["response"]["location"] for e in reply.json()["entry"]]
        for location in locations[:: max(1, len(locations) // 40)]:  # a sample, served by either process
            rtype, rid = location.split("/")[:2]
            assert http.get(f"{server.base}/{rtype}/{rid}").status_code == 200
    server.stop()
    reader = LakeReader(open_catalog(make_settings(data_dir)))
    ids = [
        (rtype, rid)
        for table in all_tables()
        for rtype, rid in zip(
            *(reader.scan(table, ("resource_type", "id")).column(c).to_pylist() for c in (0, 1)), strict=True
        )
    ]
    assert len(ids) == posted
    assert len(set(ids)) == posted
