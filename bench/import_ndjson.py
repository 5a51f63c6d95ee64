"""Bulk-import benchmark: a large NDJSON file through ``fhirlake ingest import``, peak RSS measured.

Generates ``--size-mb`` of Synthea-shaped NDJSON (Encounters with conditional
references to Practitioners/Organizations/Locations, Conditions, Immunizations;
each line a fresh id), stages the referenced Organizations, Locations and
Practitioners first, runs the real CLI on a fresh data dir, and samples the
resident memory of the whole process tree (gateway process plus validation
workers) every 100 ms. The claim under test: memory stays bounded (peak RSS
< 500 MB) whatever the file size, because the file is streamed in chunks.

    .venv/bin/python bench/import_ndjson.py [--size-mb 1024] [--out bench/results/import.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
BULK = ROOT / "tests" / "data" / "synthea_bulk"
REFERENCED = ("Organization", "Location", "Practitioner")
TEMPLATES = ("Encounter", "Condition", "Immunization")


def generate(target: Path, size_mb: int) -> tuple[int, int]:
    """Write ``size_mb`` MB of re-keyed resources; returns (lines, bytes)."""
    templates = []
    for name in TEMPLATES:
        for line in (BULK / f"{name}.000.ndjson").read_bytes().splitlines():
            templates.append((orjson.loads(line)["id"].encode(), line))
    limit, written, lines = size_mb * 1024 * 1024, 0, 0
    with target.open("wb") as out:
        while written < limit:
            for old_id, line in templates:
                fresh = line.replace(old_id, str(uuid.uuid4()).encode()) + b"\n"
                out.write(fresh)
                written += len(fresh)
                lines += 1
                if written >= limit:
                    break
    return lines, written


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS of the process, RSS of the process and all its children), in bytes."""
    try:
        own = proc.memory_info().rss
        total = own + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0, 0
    return own, total


def run(size_mb: int, work: Path) -> dict[str, object]:
    data_dir, files = work / "data", work / "files"
    files.mkdir(parents=True)
    staged = [shutil.copy(BULK / f"{name}.000.ndjson", files / f"{name}.000.ndjson") for name in REFERENCED]
    big = files / "Encounter.big.ndjson"
    lines, size = generate(big, size_mb)
    env = os.environ | {"FHIRLAKE_LOG_LEVEL": "warning"}
    cmd = [
        sys.executable,
        "-m",
        "fhirlake.cli",
        "ingest",
        "import",
        *map(str, staged),
        str(big),
        "--data-dir",
        str(data_dir),
    ]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc = psutil.Process(child.pid)
    peak = {"own": 0, "tree": 0}
    series: list[tuple[float, float]] = []  # (seconds, tree RSS MB) every ~10 s: growth or plateau
    stop = threading.Event()

    def sample() -> None:
        next_mark = 0.0
        while not stop.is_set():
            own, total = tree_rss(proc)
            peak["own"], peak["tree"] = max(peak["own"], own), max(peak["tree"], total)
            elapsed = time.perf_counter() - started
            if elapsed >= next_mark:
                series.append((round(elapsed, 1), round(total / 1024 / 1024, 1)))
                next_mark += 10.0
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - started
    text = out.decode()
    report = json.loads(text[text.rfind("\n{") + 1 :] if "\n{" in text else text)
    return {
        "file_mb": round(size / 1024 / 1024, 1),
        "lines": lines,
        "exit_code": child.returncode,
        "stored": report["stored"],
        "failed": report["failed"],
        "seconds": round(seconds, 1),
        "resources_per_s": round(report["stored"] / seconds, 1),
        "mb_per_s": round(size / 1024 / 1024 / seconds, 2),
        "peak_rss_mb": round(peak["own"] / 1024 / 1024, 1),
        "peak_rss_tree_mb": round(peak["tree"] / 1024 / 1024, 1),
        "limit_mb": 500,
        "within_limit": peak["tree"] < 500 * 1024 * 1024,
        "validation_workers": 0,  # the import command's default: validation in-process
        "rss_series_mb": series,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "import.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fhirlake-import-") as tmp:
        result = run(args.size_mb, Path(tmp))
    doc = {
        "benchmark": "bulk NDJSON import (fhirlake ingest import)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "result": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if result["within_limit"] and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
