"""Every shared Synthea bundle posted as a transaction comes back intact, and lands in the lake."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from lake.schema import table_for
from tests.fixtures.app import container_of, flush_lake
from tests.fixtures.data import synthea_paths


def _rewrite(node: Any, urls: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v, urls) for k, v in node.items()}
        if isinstance(out.get("reference"), str) and out["reference"] in urls:
            out["reference"] = urls[out["reference"]]
        return out
    if isinstance(node, list):
        return [_rewrite(v, urls) for v in node]
    return node


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = {k: v for k, v in out.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


@pytest.mark.parametrize("path", synthea_paths(), ids=lambda p: p.name[:20])
def test_bundle_round_trips(client: TestClient, path: Any) -> None:
    bundle = orjson.loads(path.read_bytes())
    response = client.post("/fhir", content=path.read_bytes())
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["type"] == "transaction-response"
    assert len(reply["entry"]) == len(bundle["entry"])
    urls = {}
    for sent, got in zip(bundle["entry"], reply["entry"], strict=True):
        assert got["response"]["status"] == "201 Created"
        rtype, rid, _, version = got["response"]["location"].split("/")
        assert rtype == sent["resource"]["resourceType"] and version == "1"
        urls[sent["fullUrl"]] = f"{rtype}/{rid}"
    for sent in bundle["entry"]:
        ref = urls[sent["fullUrl"]]
        stored = client.get(f"/fhir/{ref}")
        assert stored.status_code == 200
        assert stored.headers["etag"] == 'W/"1"'
        expected = _rewrite(sent["resource"], urls)
        expected["id"] = ref.split("/")[1]
        assert _without_server_meta(stored.json()) == _without_server_meta(expected)

    flush_lake(client)
    reader = container_of(client).lake_reader
    expected_counts = Counter(table_for(e["resource"]["resourceType"]) for e in bundle["entry"])
    for table, count in expected_counts.items():
        rows = reader.scan(table, ("resource_type", "id"))
        assert rows.num_rows == count, table


def test_reads_come_from_the_lake_once_the_journal_is_pruned(tmp_path: Any) -> None:
    from tests.fixtures.app import make_settings, open_client

    settings = make_settings(tmp_path / "data", hot_retention_s=0)
    path = synthea_paths()[1]
    with open_client(settings) as client:
        reply = client.post("/fhir", content=path.read_bytes()).json()
        flush_lake(client)
        journal = container_of(client).journal
        hot = journal.reader().execute("SELECT COUNT(*) FROM versions WHERE body IS NOT NULL").fetchone()[0]
        assert hot == 0
        for entry in reply["entry"]:
            rtype, rid = entry["response"]["location"].split("/")[:2]
            got = client.get(f"/fhir/{rtype}/{rid}")
            assert got.status_code == 200 and got.json()["id"] == rid
