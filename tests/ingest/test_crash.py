"""kill -9 while clients post bundles: acknowledged data survives, nothing is partial or doubled."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fhirlake.bootstrap import open_catalog
from lake.reader import LakeReader
from lake.schema import all_tables
from tests.fixtures.app import make_settings
from tests.fixtures.data import synthea_paths
from tests.fixtures.rekey import marker_of, rekey
from tests.fixtures.sealed import opener
from tests.fixtures.server import polite_client

HEADERS = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}


class Poster:
    def __init__(self, base: str, sources: list[bytes], auth: dict[str, str]) -> None:
        self.base = base
        self.auth = auth
        self.sources = sources
        self.sent: dict[str, tuple[bytes, int]] = {}
        self.acked: dict[str, list[str]] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self, worker: int) -> None:
        with httpx.Client(timeout=30, headers=self.auth) as http:
            i = worker
            while not self.stop.is_set():
                body, marker, entries = rekey(self.sources[i % len(self.sources)])
                i += 1
                with self.lock:
                    self.sent[marker] = (body, entries)
                try:
                    reply = http.post(self.base, content=body, headers=HEADERS)
                except httpx.HTTPError:
                    return  # the server died under us
                if reply.status_code == 200:
                    locations = [e["response"]["location"] for e in reply.json()["entry"]]
                    with self.lock:
                        self.acked[marker] = locations


def _markers_in_journal(data_dir: Path) -> Counter[str]:
    import sqlite3

    conn = sqlite3.connect(data_dir / "journal" / "journal.db")
    counts: Counter[str] = Counter()
    with opener(data_dir) as keys:
        for rtype, rid, version, body in conn.execute(
            "SELECT rtype, id, version, body FROM versions WHERE body IS NOT NULL"
        ):
            marker = marker_of(keys.body(rtype, rid, version, body))
            if marker:
                counts[marker] += 1
    conn.close()
    return counts


def _markers_in_lake(data_dir: Path) -> tuple[Counter[str], int]:
    reader = LakeReader(open_catalog(make_settings(data_dir)))
    counts: Counter[str] = Counter()
    keys: Counter[tuple[str, str, int]] = Counter()
    with opener(data_dir) as sealed:
        for table in all_tables():
            data = reader.scan(table, ("resource_type", "id", "version", "resource"))
            columns = (data.column(c).to_pylist() for c in data.column_names)
            for rtype, rid, version, body in zip(*columns, strict=True):
                keys[(rtype, rid, version)] += 1
                marker = marker_of(sealed.body(rtype, rid, version, body)) if body else None
                if marker:
                    counts[marker] += 1
    duplicates = sum(1 for n in keys.values() if n > 1)
    return counts, duplicates


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged(server_factory: Any, tmp_path: Path) -> None:
    sources = [p.read_bytes() for p in synthea_paths()[:4]]
    server = server_factory()
    server.start()
    poster = Poster(server.base, sources, server.headers())
    threads = [threading.Thread(target=poster.run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(poster.acked) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.proc is not None
    workers = psutil.Process(server.proc.pid).children(recursive=True)
    server.kill9()
    poster.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(poster.acked) >= 12
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], "validation workers must not outlive a killed server"

    server.start()
    with polite_client(timeout=30, headers=server.headers()) as http:
        for locations in poster.acked.values():
            for location in locations:
                rtype, rid = location.split("/")[:2]
                assert http.get(f"{server.base}/{rtype}/{rid}").status_code == 200
        counts = _markers_in_journal(server.data_dir)
        for marker, (_, entries) in poster.sent.items():
            assert counts.get(marker, 0) in (0, entries), "a transaction is partly present"
            if marker in poster.acked:
                assert counts[marker] == entries
        # Clients retry what was never acknowledged; idempotency keeps everything single.
        for body, entries in poster.sent.values():
            reply = http.post(server.base, content=body, headers=HEADERS)
            assert reply.status_code == 200
            assert len(reply.json()["entry"]) == entries
    server.stop()  # graceful: drains the journal into the lake

    counts = _markers_in_journal(server.data_dir)
    lake_counts, duplicates = _markers_in_lake(server.data_dir)
    assert duplicates == 0
    for marker, (_, entries) in poster.sent.items():
        assert counts[marker] == entries
        assert lake_counts[marker] == entries
