"""Clinical query benchmark: a lake of re-keyed Synthea patients, concurrent clients, the issue-7 targets.

Loads ``--resources`` (default 1,000,000) through ``POST /fhir`` into a server
that keeps no bodies in the journal once they are in Iceberg
(``hot_retention_s=0``: every read below is a lake read), runs
``fhirlake lake maintain``, restarts the server and measures, with
``--clients`` concurrent clients over TLS with a bearer token:

* read by id (Observation, Patient);
* ``Observation?patient=…&code=…``;
* ``Patient/{id}/$everything`` for patients of the median Synthea bundle;
* a ``Group/{id}/$export`` of at least ``--export`` resources, kick-off to last byte downloaded.

Files scanned per query are counted by planning the same Iceberg scans the
server runs. ``--keep DIR`` keeps (and reuses) the loaded lake.

    .venv/bin/python bench/query.py [--resources 1000000] [--clients 4] [--seconds 20] [--out bench/results/query.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from client_auth import Credentials, credentials
from harness import Server, git_commit, machine, percentile
from workload import REPO, SYNTHEA, load_templates, rekey

TARGETS_MS = {"read": 20.0, "observation_by_patient_and_code": 50.0, "everything": 150.0}
TARGET_EXPORT_S = 30.0
_TOKEN_LIFE_S = 200.0


@dataclass(slots=True)
class Loaded:
    resources: int = 0
    patients: list[tuple[str, int]] = field(default_factory=list)  # (id, template index)
    observations: list[str] = field(default_factory=list)  # a sample of ids
    seconds: float = 0.0


class Session:
    """Credentials that renew themselves before the access token expires."""

    def __init__(self, server: Server, out: Path) -> None:
        self.server, self.out = server, out
        self.creds: Credentials = credentials(server.url, server.data_dir, out)
        self.since = time.monotonic()

    def fresh(self) -> Credentials:
        if time.monotonic() - self.since > _TOKEN_LIFE_S:
            self.creds, self.since = credentials(self.server.url, self.server.data_dir, self.out), time.monotonic()
        return self.creds


def bundles(target: int) -> Iterator[tuple[int, bytes, int]]:
    templates = load_templates(SYNTHEA)
    total = copy = 0
    while total < target:
        index = copy % len(templates)
        total += templates[index].resources
        yield index, rekey(templates[index], copy), templates[index].resources
        copy += 1


async def load(session: Session, target: int, clients: int) -> Loaded:
    loaded = Loaded()
    source = bundles(target)
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}

    async def worker(http: httpx.AsyncClient) -> None:
        for index, raw, size in source:
            reply = await http.post("/fhir", content=raw, headers=headers | session.fresh().headers)
            if reply.status_code != 200:
                raise RuntimeError(f"load failed: HTTP {reply.status_code} {reply.text[:200]}")
            for entry in orjson.loads(reply.content)["entry"]:
                rtype, rid = entry["response"]["location"].split("/")[:2]
                if rtype == "Patient":
                    loaded.patients.append((rid, index))
                elif rtype == "Observation" and random.random() < 0.02:
                    loaded.observations.append(rid)
            loaded.resources += size
            if loaded.resources % 50_000 < size:
                print(f"  loaded {loaded.resources:,} resources", flush=True)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=session.server.url, timeout=600, verify=session.creds.tls) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    loaded.seconds = time.perf_counter() - started
    return loaded


def template_codes() -> list[str]:
    """For each template, the LOINC code of its first Observation."""
    codes = []
    for path in sorted(SYNTHEA.glob("*.json")):
        doc = orjson.loads(path.read_bytes())
        obs = next(e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation")
        codes.append(obs["code"]["coding"][0]["code"])
    return codes


async def measure(session: Session, urls: list[str], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            url = random.choice(urls)
            started = time.perf_counter()
            reply = await http.get(url, headers=session.fresh().headers | {"Accept": "application/fhir+json"})
            latencies.append((time.perf_counter() - started) * 1000)
            failures += reply.status_code != 200

    async with httpx.AsyncClient(base_url=session.server.url, timeout=60, verify=session.creds.tls) as http:
        for url in urls[:5]:  # warm-up: first use of each table
            await http.get(url, headers=session.fresh().headers)
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return {
        "requests": len(latencies),
        "failures": failures,
        "per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
    }


async def export(session: Session, members: list[str]) -> dict[str, Any]:
    headers = session.fresh().headers | {"Content-Type": "application/fhir+json"}
    group = {"resourceType": "Group", "type": "person", "actual": True}
    group["member"] = [{"entity": {"reference": f"Patient/{m}"}} for m in members]
    async with httpx.AsyncClient(base_url=session.server.url, timeout=600, verify=session.creds.tls) as http:
        gid = (await http.post("/fhir/Group", content=orjson.dumps(group), headers=headers)).json()["id"]
        started = time.perf_counter()
        kick = await http.get(f"/fhir/Group/{gid}/$export", headers=headers | {"Prefer": "respond-async"})
        status_url = kick.headers["Content-Location"]
        while (reply := await http.get(status_url, headers=session.fresh().headers)).status_code == 202:
            await asyncio.sleep(0.2)
        manifest = reply.json()
        prepared = time.perf_counter() - started
        lines = 0
        for output in manifest["output"]:
            async with http.stream("GET", output["url"], headers=session.fresh().headers) as body:
                async for chunk in body.aiter_bytes():
                    lines += chunk.count(b"\n")
        total = time.perf_counter() - started
    return {
        "resources": lines,
        "members": len(members),
        "seconds_to_complete": round(prepared, 2),
        "seconds_total": round(total, 2),
        "resources_per_s": round(lines / total, 1),
        "target_s": TARGET_EXPORT_S,
        "met": total <= TARGET_EXPORT_S,
    }


def files_scanned(data_dir: Path, loaded: Loaded) -> dict[str, Any]:
    """Data files the server's scans plan for a patient's reads (run where ``ingest`` is the package)."""
    import subprocess

    sample = random.sample([p for p, _ in loaded.patients], min(20, len(loaded.patients)))
    cmd = [sys.executable, "-m", "bench.lake_files", str(data_dir), ",".join(sample)]
    done = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data_dir = root / "data"
    env = {"FHIRLAKE_LAKE__HOT_RETENTION_S": "0", "FHIRLAKE_LOG_LEVEL": "warning"}
    import os

    env = os.environ | env
    ids_file = root / "loaded.json"
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "commit": git_commit(), "machine": machine()}
    if ids_file.exists():
        loaded = Loaded(**json.loads(ids_file.read_text()))
    else:
        server = Server(data_dir, root / "load.log", env)
        server.start()
        try:
            loaded = asyncio.run(load(Session(server, root / "client"), args.resources, args.clients))
        finally:
            server.stop()
        ids_file.write_text(json.dumps(asdict(loaded)))
        subprocess_maintain(data_dir, env)
    report["load"] = {
        "resources": loaded.resources,
        "patients": len(loaded.patients),
        "seconds": round(loaded.seconds, 1),
    }
    report["files_scanned"] = files_scanned(data_dir, loaded)
    server = Server(data_dir, root / "query.log", env)
    server.start()
    try:
        session = Session(server, root / "client")
        codes = template_codes()
        sizes = [t.resources for t in load_templates(SYNTHEA)]
        median = sorted(range(len(sizes)), key=lambda i: sizes[i])[len(sizes) // 2]
        rng = random.Random(7)
        sample = rng.sample(loaded.patients, min(2000, len(loaded.patients)))
        kinds = {
            "read_observation": [f"/fhir/Observation/{o}" for o in loaded.observations[:2000]],
            "read_patient": [f"/fhir/Patient/{p}" for p, _ in sample],
            "observation_by_patient_and_code": [
                f"/fhir/Observation?patient={p}&code=http://loinc.org|{codes[t]}" for p, t in sample
            ],
            "everything": [f"/fhir/Patient/{p}/$everything?_count=1000" for p, t in sample if t == median],
        }
        report["queries"] = {
            k: asyncio.run(measure(session, urls, args.clients, args.seconds)) for k, urls in kinds.items()
        }
        members, total = [], 0
        for pid, t in loaded.patients:
            if total >= args.export:
                break
            members.append(pid)
            total += sizes[t]
        report["export"] = asyncio.run(export(session, members))
    finally:
        server.stop()
    report["targets"] = {
        "read_p95_ms": TARGETS_MS["read"],
        "observation_by_patient_and_code_p95_ms": TARGETS_MS["observation_by_patient_and_code"],
        "everything_p95_ms": TARGETS_MS["everything"],
        "export_100k_s": TARGET_EXPORT_S,
    }
    report["settings"] = {"clients": args.clients, "seconds_per_kind": args.seconds, "hot_retention_s": 0}
    return report


def subprocess_maintain(data_dir: Path, env: dict[str, str]) -> None:
    import subprocess

    cmd = [sys.executable, "-m", "fhirlake.cli", "lake", "maintain", "--data-dir", str(data_dir)]
    subprocess.run(cmd, check=True, env=env, cwd=REPO, capture_output=True)


def print_summary(report: dict[str, Any]) -> None:
    print(f"lake: {report['load']['resources']:,} resources, {report['load']['patients']:,} patients")
    for kind, n in report["queries"].items():
        latency = f"p50 {n['p50_ms']:7.1f} ms  p95 {n['p95_ms']:7.1f} ms  p99 {n['p99_ms']:7.1f} ms"
        print(f"{kind:34s} {latency}  ({n['per_s']}/s, {n['failures']} failed)")
    exp = report["export"]
    print(f"$export of {exp['resources']:,} resources: {exp['seconds_total']} s (target {TARGET_EXPORT_S} s)")
    for rtype, files in report["files_scanned"].items():
        print(f"files per patient read, {rtype}: {files['files_per_patient_read_mean']} of {files['table_files']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--export", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="keep the loaded lake here (and reuse it when present)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "query.json")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="fhirlake-query-") as tmp:
            report = run(args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
