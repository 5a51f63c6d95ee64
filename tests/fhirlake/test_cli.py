"""The operator commands work against a data directory written by the service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fixtures.app import flush_lake, make_settings, open_client
from tests.fixtures.data import synthea_paths


def _run(*args: str) -> dict[str, dict[str, int]]:
    done = subprocess.run(
        [sys.executable, "-m", "fhirlake.cli", *args], capture_output=True, check=True, text=True, timeout=300
    )
    result: dict[str, dict[str, int]] = json.loads(done.stdout)
    return result


def test_lake_info_and_maintain(tmp_path: Path) -> None:
    data = tmp_path / "data"
    posted = 0
    with open_client(make_settings(data)) as client:
        for path in synthea_paths()[:5]:  # five commits: enough small files per partition to compact
            posted += len(client.post("/fhir", content=path.read_bytes()).json()["entry"])
            flush_lake(client)
    info = _run("lake", "info", "--data-dir", str(data))
    assert sum(t["rows"] for t in info.values()) == posted
    assert info["patient"]["rows"] == 5
    files_before = sum(t["data_files"] for t in info.values())

    report = _run("lake", "maintain", "--data-dir", str(data), "--retention", "0")
    assert sum(t["rows"] for t in report.values()) == posted
    assert sum(t["files_after"] for t in report.values()) < files_before


def test_serve_demo_loads_patients_once(tmp_path: Path) -> None:
    from fhirlake.settings import Settings

    settings = make_settings(tmp_path / "data")
    for _ in range(2):  # a restart must not load the demo twice
        with open_client(settings, demo=True) as client:
            assert client.get("/fhir/Patient").json()["total"] == 3
    assert isinstance(settings, Settings)
