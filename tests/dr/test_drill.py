"""The full drill: embedded default (two directories) and two S3 regions (two moto servers on loopback).

Each drill starts real ``fhirlake serve`` processes over TLS with mTLS clients, writes canaries
under load while replication follows, kills the primary and takes its storage away, fails over,
measures RPO and RTO, verifies, fails back and verifies again (~30 s each).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from dr.drill import DirectoryOutage, Drill
from dr.region import regions
from dr.report import write_report
from fhirlake.cli import main
from fhirlake.dr_cli import drill_audit
from fhirlake.settings import Settings
from tests.fixtures.moto import moto_server, required_moto
from tests.fixtures.netproxy import TcpProxy

pytestmark = pytest.mark.slow

REQUIRED = (
    "erase before failure",
    "RPO",
    "RTO",
    "secondary: audit chain",
    "secondary: keys",
    "secondary: shredding",
    "secondary: erased patient answers 410",
    "secondary: canary reads",
    "secondary: table patient",
    "primary: audit chain",
    "primary: keys",
    "primary: shredding",
    "primary: erased patient answers 410",
    "primary: canary reads",
    "primary: table patient",
)


@pytest.fixture
def drill_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment read by the test process and by the gateway processes the drill starts."""
    data_dir = tmp_path / "data"
    for name, value in {
        "FHIRLAKE_DATA_DIR": str(data_dir),
        "FHIRLAKE_INGEST__VALIDATION_WORKERS": "0",
        "FHIRLAKE_LAKE__COMMIT_INTERVAL_S": "1",
        "FHIRLAKE_DR__FOLLOW_INTERVAL_S": "0.5",
        "FHIRLAKE_DR__DRILL_LOAD_S": "3",
        "FHIRLAKE_LOG_JSON": "false",
    }.items():
        monkeypatch.setenv(name, value)
    return data_dir


def _check_report(doc: dict[str, Any]) -> None:
    failing = [c for c in doc["checks"] if not c["ok"]]
    assert failing == []
    assert doc["ok"] is True
    names = {c["name"] for c in doc["checks"]}
    assert set(REQUIRED) <= names
    assert doc["rpo"]["acknowledged_writes"] > 20
    assert 0 <= doc["rpo"]["seconds"] <= doc["rpo"]["target_seconds"]
    assert 0 < doc["rto"]["seconds"] <= doc["rto"]["target_seconds"]
    assert all(doc["rto"][part] is not None for part in ("read_s", "write_s", "audit_s"))
    assert doc["replication_rounds_during_load"] >= 1
    assert [s["action"] for s in doc["switches"]] == ["failover", "failback"]


def _lost_writes_are_exactly_the_unreplicated(doc: dict[str, Any], settings: Settings) -> None:
    """Each listed write was acknowledged (the primary's own journal, kept at failback, holds it)
    and is not in the region state that survived; nothing else is missing (the drill's canary
    read check covers every other acknowledged write)."""
    primary, _ = regions(settings)
    preserved = doc["switches"][1]["preserved_journal"]
    assert preserved is not None
    with closing(sqlite3.connect(f"file:{preserved}?mode=ro", uri=True)) as conn:
        kept = {tuple(r) for r in conn.execute("SELECT rtype, id, version FROM versions WHERE id LIKE 'dr-%'")}
    with closing(sqlite3.connect(f"file:{primary.journal}?mode=ro", uri=True)) as conn:
        now = {tuple(r) for r in conn.execute("SELECT rtype, id, version FROM versions WHERE id LIKE 'dr-%'")}
    for write in doc["rpo"]["lost_writes"]:
        key = (write["resource_type"], write["id"], write["version"])
        assert key in kept and key not in now, key


def _dr_events(settings: Settings) -> set[str]:
    primary, _ = regions(settings)
    found = set()
    for segment in primary.audit_dir.glob("trail-*/segment-*.log"):
        text = segment.read_text()
        found |= {tag for tag in ("dr-failover", "dr-failback", "dr-replicate", "dr-drill") if f'"{tag}"' in text}
    return found


def test_drill_on_the_embedded_default(drill_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dr", "drill"])
    out = [line for line in capsys.readouterr().out.splitlines() if line.endswith((".json", ".md"))]
    doc = json.loads(Path(out[0]).read_text())
    assert code == 0, [c for c in doc["checks"] if not c["ok"]]
    _check_report(doc)
    markdown = Path(out[1]).read_text()
    assert "PASSED" in markdown and "RPO" in markdown and "RTO" in markdown
    for write in doc["rpo"]["lost_writes"]:
        assert write["reference"] in markdown
    settings = Settings()
    _lost_writes_are_exactly_the_unreplicated(doc, settings)
    assert _dr_events(settings) == {"dr-failover", "dr-failback", "dr-replicate", "dr-drill"}
    primary, secondary = regions(settings)
    assert secondary.root == drill_env.resolve() / "regions" / "secondary"
    assert all((primary.root / name).is_dir() for name in ("journal", "lake", "keys", "audit"))


def test_a_drill_that_misses_its_target_fails_and_says_which(
    drill_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No failover finishes in a millisecond: the RTO check fails, the report says FAILED, the exit code is 1."""
    monkeypatch.setenv("FHIRLAKE_DR__RTO_TARGET_S", "0.001")
    code = main(["dr", "drill"])
    out = [line for line in capsys.readouterr().out.splitlines() if line.endswith((".json", ".md"))]
    doc = json.loads(Path(out[0]).read_text())
    assert code == 1 and doc["ok"] is False
    assert [c["name"] for c in doc["checks"] if not c["ok"]] == ["RTO"]
    assert "FAILED" in Path(out[1]).read_text()


class _RegionLoss:
    """The primary's local state disappears and its S3 endpoint stops answering."""

    def __init__(self, directories: DirectoryOutage, proxy: TcpProxy) -> None:
        self._directories, self._proxy = directories, proxy
        self.lost = False

    def lose(self) -> None:
        self._directories.lose()
        self._proxy.block()
        self.lost = True

    def restore(self) -> None:
        self._proxy.unblock()
        self._directories.restore()


@pytest.fixture
def two_s3_regions(drill_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, TcpProxy]]:
    with required_moto() as primary_url, moto_server() as secondary_url:
        target = urlparse(primary_url)
        assert target.hostname is not None and target.port is not None
        with TcpProxy(target.hostname, target.port) as proxy:
            for url, bucket in ((primary_url, "fhirlake-east"), (secondary_url, "fhirlake-west")):
                boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
            regions_env = {
                "primary": {"warehouse": "s3://fhirlake-east/warehouse", "s3_endpoint": proxy.url},
                "secondary": {"warehouse": "s3://fhirlake-west/warehouse", "s3_endpoint": secondary_url},
            }
            monkeypatch.setenv("FHIRLAKE_DR__REGIONS", json.dumps(regions_env))
            # Rounds against the emulator take seconds: load long enough for one to pin a lake commit.
            monkeypatch.setenv("FHIRLAKE_DR__DRILL_LOAD_S", "6")
            yield primary_url, secondary_url, proxy


def _objects(url: str, bucket: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="warehouse/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_drill_on_two_s3_regions(two_s3_regions: tuple[str, str, TcpProxy]) -> None:
    primary_url, secondary_url, proxy = two_s3_regions
    settings = Settings()
    primary, secondary = regions(settings)
    assert primary.warehouse.startswith("s3://") and secondary.warehouse.startswith("s3://")
    loss = _RegionLoss(DirectoryOutage(primary, "s3-drill"), proxy)
    report = Drill(settings, outage=loss, audit=drill_audit(settings)).run()
    path = write_report(report, settings.data_dir)
    doc = json.loads(path.read_text())
    assert loss.lost
    _check_report(doc)
    _lost_writes_are_exactly_the_unreplicated(doc, settings)
    east, west = _objects(primary_url, "fhirlake-east"), _objects(secondary_url, "fhirlake-west")
    assert any(k.endswith(".parquet") and "/patient/data/" in k for k in east)
    assert any(k.endswith(".parquet") and "/patient/data/" in k for k in west)
    assert any(k.endswith(".metadata.json") for k in west)
    assert not list((primary.root / "lake").glob("warehouse/**/*.parquet"))  # the lake lives in the bucket


def _journal_versions(path: Path | str) -> set[tuple[str, str, int]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT rtype, id, version FROM versions WHERE id LIKE 'dr-%'").fetchall()
    return {(str(r[0]), str(r[1]), int(r[2])) for r in rows}


def test_writes_acknowledged_after_the_last_round_are_listed_exactly_as_lost(drill_env: Path) -> None:
    """A forced loss: replication stops, five patients are acknowledged, the primary is lost.

    The primary's own journal (kept at failback) is the independent witness: the report lists
    exactly its late writes, and every other write it acknowledged is in the secondary.
    """
    settings = Settings()
    report = Drill(settings, audit=drill_audit(settings), late_writes=5).run()
    path = write_report(report, settings.data_dir)
    doc = json.loads(path.read_text())
    _check_report(doc)  # a loss within the RPO target is a passing drill
    _lost_writes_are_exactly_the_unreplicated(doc, settings)

    preserved = _journal_versions(doc["switches"][1]["preserved_journal"])
    late = {key for key in preserved if "-late-" in key[1]}
    listed = [(w["resource_type"], w["id"], w["version"]) for w in doc["rpo"]["lost_writes"]]
    assert len(late) == 5 and sorted(listed) == sorted(late)
    assert doc["rpo"]["seconds"] > 0
    lost_at = [w["acknowledged_at"] for w in doc["rpo"]["lost_writes"]]
    assert all(doc["primary_lost_at"] > at for at in lost_at)  # ISO times of one format and zone

    _, secondary = regions(settings)
    survived = _journal_versions(secondary.journal)
    assert late.isdisjoint(survived)
    assert preserved - late <= survived  # nothing else acknowledged before the loss is missing
    reads = next(c for c in doc["checks"] if c["name"] == "secondary: canary reads")
    # Every replicated write reads back over HTTP, plus the one the RTO step made on the secondary.
    assert reads["ok"] and reads["detail"].startswith(f"0 of {doc['rpo']['acknowledged_writes'] - 5 + 1} ")

    markdown = path.with_suffix(".md").read_text()
    assert f"5 of {doc['rpo']['acknowledged_writes']} acknowledged writes lost" in markdown
    assert f"**RPO**: {doc['rpo']['seconds']} s" in markdown
    for write in doc["rpo"]["lost_writes"]:
        assert f"| {write['reference']} | {write['version']} | {write['acknowledged_at']} |" in markdown
    assert "None: every acknowledged write reached the secondary." not in markdown
