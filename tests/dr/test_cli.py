"""``fhirlake dr`` commands: replicate, status, verify (failing on corruption), failover; each audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dr.region import is_fenced, load_control, regions
from fhirlake.cli import main
from fhirlake.settings import Settings
from tests.dr.support import Callers, gateway, post_canary
from tests.fixtures.app import make_settings


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(list(argv))
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line == "{")
    return code, json.loads("\n".join(lines[start:]))


def _events(settings: Settings, region_name: str) -> str:
    target = regions(settings)[0 if region_name == "primary" else 1]
    return "".join(p.read_text() for p in target.audit_dir.glob("trail-*/segment-*.log"))


def test_replicate_status_verify_and_failover_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path / "data")
    data_dir = str(settings.data_dir)
    with gateway(settings, Callers()) as client:
        post_canary(client)
    code, doc = _run(capsys, "dr", "replicate", "--data-dir", data_dir)
    assert code == 0 and doc["generation"] == 1 and "patient" in doc["tables_changed"]  # type: ignore[operator]
    code, doc = _run(capsys, "dr", "status", "--data-dir", data_dir)
    assert code == 0 and doc["tables"]["patient"]["snapshots_behind"] == 0  # type: ignore[index]
    code, doc = _run(capsys, "dr", "verify", "--data-dir", data_dir)
    assert code == 0 and doc["ok"] is True

    _, secondary = regions(settings)
    victim = next((secondary.root / "lake" / "warehouse" / "fhir" / "patient" / "data").rglob("*.parquet"))
    original = victim.read_bytes()
    victim.write_bytes(original[:-10] + b"0123456789")
    code, doc = _run(capsys, "dr", "verify", "--data-dir", data_dir)
    assert code == 1 and doc["ok"] is False
    assert any(victim.name in c["detail"] for c in doc["checks"] if not c["ok"])  # type: ignore[attr-defined]

    code, doc = _run(capsys, "dr", "failover", "--data-dir", data_dir)
    assert code == 0 and doc["to_region"] == "secondary" and doc["fence_written"] is True
    assert load_control(settings).active == "secondary"
    assert '"dr-failover"' in _events(settings, "secondary")  # recorded where the command left things

    victim.unlink()
    assert main(["dr", "failback", "--data-dir", data_dir]) == 2  # a re-sync from a broken copy stops
    assert load_control(settings).active == "secondary"  # ... and the secondary stays active, unfenced
    assert not is_fenced(secondary)
    victim.write_bytes(original)
    code, doc = _run(capsys, "dr", "failback", "--data-dir", data_dir)
    assert code == 0 and doc["to_region"] == "primary" and doc["preserved_journal"]
    assert load_control(settings).active == "primary"
    assert main(["dr", "failback", "--data-dir", data_dir]) == 2  # the primary is active already
    events = _events(settings, "primary")  # the secondary's trail came back with the re-sync
    for tag in ("dr-replicate", "dr-failover", "dr-failback", '"dr"'):
        assert tag in events, tag
