"""End-to-end ingestion benchmark: Synthea bundles through ``POST /fhir`` into Iceberg.

Runs the validation-only baseline first (server not started yet), then starts
``fhirlake serve`` on a fresh data directory, posts re-keyed copies of the
Synthea transaction bundles from concurrent clients, stops the server with
SIGTERM (it drains every accepted row into Iceberg) and checks the lake. It
does this in alternating rounds (``--rounds``, default 2), each on a fresh data
directory: with field-level encryption off, with the audit trail off (both
benchmark-only modes) and as the product, so one run reports what encryption
and audit cost; the best run of each counts, and every round is printed.

    .venv/bin/python bench/ingest.py [--resources 100000] [--clients 8] [--out bench/results/ingest.json]

See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from client_auth import Credentials, credentials
from harness import Server, machine, percentile
from measure import Baseline, CpuLedger, run_baseline
from workload import REPO, Workload, build_workload

TARGET_RESOURCES_PER_S = 2000.0
TARGET_BASELINE_RATIO = 0.6
TARGET_ENCRYPTION_COST = 0.15  # issue 3: encryption costs at most 15 % of throughput
TARGET_AUDIT_COST = 0.10  # issue 5: the audit trail costs at most 10 % of throughput
FOREIGN_LOAD_WARNING = 0.05  # share of all cores used by processes outside the benchmark
# uvicorn re-raises the SIGTERM it caught once its graceful shutdown (and our lifespan drain) is done
CLEAN_EXIT = (0, -signal.SIGTERM)


class RssSampler(threading.Thread):
    """Peak RSS of a process tree (the server and its pool workers), sampled every ``interval``."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = self.peak_main = self.peak_at_mark = 0
        self.cpu: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self._sample()
            except psutil.NoSuchProcess:
                if not self.proc.is_running():
                    return

    def _sample(self) -> None:
        main = self.proc.memory_info().rss
        tree = main
        for child in self.proc.children(recursive=True):
            try:
                tree += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self.peak_main, self.peak_tree = max(self.peak_main, main), max(self.peak_tree, tree)

    def mark(self) -> None:
        """End of posting: remember the peak so far and the CPU seconds spent by each part of the tree."""
        self.peak_at_mark = self.peak_tree
        times = self.proc.cpu_times()
        self.cpu = {"server_main_s": times.user + times.system, "children_s": 0.0}
        for child in self.proc.children(recursive=True):
            try:
                ct = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            self.cpu["children_s"] += ct.user + ct.system

    def halt(self) -> None:
        self._halt.set()
        self.join()


# -- posting ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Posting:
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0

    def fail(self, why: str) -> None:
        self.failures += 1
        if len(self.errors) < 10:
            self.errors.append(why)


HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "Prefer": "return=minimal"}


def check_response(resp: httpx.Response, expected: int) -> str | None:
    """None when ``resp`` is a 200 transaction-response with ``expected`` entries, all 201."""
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {resp.text[:300]}"
    doc = orjson.loads(resp.content)
    if doc.get("type") != "transaction-response":
        return f"not a transaction-response: {doc.get('type')!r}"
    statuses = [e.get("response", {}).get("status", "") for e in doc.get("entry", [])]
    bad = [s for s in statuses if not s.startswith("201")]
    if len(statuses) != expected or bad:
        return f"{len(statuses)} entries for {expected} resources, not 201: {bad[:5]}"
    return None


async def _client(http: httpx.AsyncClient, workload: Workload, queue: list[int], result: Posting) -> None:
    while queue:
        i = queue.pop()
        started = time.perf_counter()
        try:
            resp = await http.post("/fhir", content=workload.bundles[i], headers=HEADERS)
            why = check_response(resp, workload.sizes[i])
        except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        if why is not None:
            result.fail(why)


async def post_all(url: str, workload: Workload, clients: int, creds: Credentials) -> Posting:
    result = Posting()
    queue = list(range(len(workload.bundles) - 1, -1, -1))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, timeout=600.0, limits=limits, verify=creds.tls, headers=creds.headers
    ) as http:
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(_client(http, workload, queue, result) for _ in range(clients)))
        result.seconds = time.perf_counter() - started
        result.client_cpu_s = time.process_time() - cpu
    return result


# -- the lake afterwards ------------------------------------------------------------------------------


def lake_info(data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "fhirlake.cli", "lake", "info", "--data-dir", str(data_dir)]
    out = subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO).stdout
    tables: dict[str, Any] = json.loads(out)
    keys = ("rows", "data_files", "snapshots", "commits", "data_files_written")
    totals = {k: sum(int(t.get(k, 0)) for t in tables.values()) for k in keys}
    used = {name: {k: t.get(k) for k in keys} for name, t in tables.items() if t.get("rows") or t.get("commits")}
    return {"totals": totals, "tables": used}


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """The server's settings under ``env`` (host, port and data dir come from the command line instead)."""
    code = "from fhirlake.settings import Settings; print(Settings().model_dump_json(exclude={'data_dir', 'server'}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env, cwd=REPO).stdout
    settings: dict[str, Any] = json.loads(out)
    return settings


# -- report -------------------------------------------------------------------------------------------


def posting_numbers(workload: Workload, posting: Posting, drain_s: float) -> dict[str, Any]:
    lat = posting.latencies_ms
    return {
        "bundles": len(workload.bundles),
        "resources": workload.total,
        "posting_s": round(posting.seconds, 3),
        "drain_s": round(drain_s, 3),
        "resources_per_s": round(workload.total / posting.seconds, 1),
        "lake_complete_resources_per_s": round(workload.total / (posting.seconds + drain_s), 1),
        "latency_ms": {f"p{q}": round(percentile(lat, q), 1) for q in (50, 95, 99)} | {"max": round(max(lat), 1)},
        "failures": posting.failures,
        "failure_samples": posting.errors,
        "client_cpu_s": round(posting.client_cpu_s, 2),
    }


def verdict(e2e: float, baseline: Baseline) -> dict[str, Any]:
    ratio = e2e / baseline.per_s
    return {
        "ratio_to_baseline": round(ratio, 3),
        "target_resources_per_s": TARGET_RESOURCES_PER_S,
        "target_ratio": TARGET_BASELINE_RATIO,
        "resources_per_s_met": e2e >= TARGET_RESOURCES_PER_S,
        "ratio_met": ratio >= TARGET_BASELINE_RATIO,
    }


def print_summary(report: dict[str, Any]) -> None:
    e2e, base, srv, lake, tgt = (report[k] for k in ("end_to_end", "baseline", "server", "lake", "targets"))
    lat, box, git = e2e["latency_ms"], report["machine"], report["machine"]["git"]

    def ok(flag: bool) -> str:
        return "MET" if flag else "NOT MET"

    lines = [
        f"fhirlake ingest benchmark — {box['timestamp_utc']}, {box['cpu_count']} cpus, "
        f"commit {str(git['commit'])[:10]}{' (dirty)' if git['dirty'] else ''}",
        f"  workload          {e2e['resources']:,} resources in {e2e['bundles']:,} transaction bundles, "
        f"{report['settings']['clients']} clients, {report['settings']['validation_workers']} validation workers",
        f"  baseline          {base['resources_per_s']:,.0f} resources/s validation only "
        f"({base['workers']} processes, {base['seconds']:.1f} s)",
        f"  end to end        {e2e['resources_per_s']:,.0f} resources/s accepted ({e2e['posting_s']:.1f} s posting)",
        f"  latency           p50 {lat['p50']:,.0f} ms   p95 {lat['p95']:,.0f} ms   p99 {lat['p99']:,.0f} ms   "
        f"max {lat['max']:,.0f} ms",
        f"  drain             {e2e['drain_s']:.1f} s after SIGTERM "
        f"({'clean' if srv['clean_exit'] else 'UNCLEAN'} exit, code {srv['exit_code']})",
        f"  lake complete     {e2e['lake_complete_resources_per_s']:,.0f} resources/s (posting + drain)",
        f"  server peak RSS   {srv['peak_rss_tree_mb']:,.0f} MB incl. children "
        f"(main process {srv['peak_rss_main_mb']:,.0f} MB; {srv['peak_rss_posting_mb']:,.0f} MB while posting)",
        f"  server CPU        main {srv['cpu_s']['server_main_s']:.1f} s, children {srv['cpu_s']['children_s']:.1f} s, "
        f"client {e2e['client_cpu_s']:.1f} s over {e2e['posting_s']:.1f} s posting",
        f"  lake              {lake['totals']['rows']:,} rows, {lake['totals']['commits']} commits, "
        f"{lake['totals']['data_files_written']} data files written ({lake['totals']['data_files']} live)",
        f"  failures          {e2e['failures']}" + "".join(f"\n    {e}" for e in e2e["failure_samples"]),
        f"  target ≥ {tgt['target_resources_per_s']:,.0f} resources/s end to end: {ok(tgt['resources_per_s_met'])}",
        f"  target ≥ {tgt['target_ratio']} of baseline: {ok(tgt['ratio_met'])} (ratio {tgt['ratio_to_baseline']:.2f})",
    ]
    if "encryption_cost" in tgt:
        off = report["encryption_off"]
        lines += [
            f"  encryption off    {tgt['encryption_off_resources_per_s']:,.0f} resources/s accepted "
            f"(p50 {off['end_to_end']['latency_ms']['p50']:,.0f} ms, "
            f"peak RSS {off['server']['peak_rss_tree_mb']:,.0f} MB, "
            f"{off['lake']['totals']['data_files_written']} data files)",
            f"  target encryption costs ≤ {tgt['target_encryption_cost']:.0%}: {ok(tgt['encryption_cost_met'])} "
            f"(cost {tgt['encryption_cost']:.1%}: {e2e['resources_per_s']:,.0f} on vs "
            f"{tgt['encryption_off_resources_per_s']:,.0f} off, best of "
            f"{len(report['rounds']['product'])} alternating rounds each)",
        ]
    if "audit_cost" in tgt:
        lines.append(
            f"  target audit costs ≤ {tgt['target_audit_cost']:.0%}: {ok(tgt['audit_cost_met'])} "
            f"(cost {tgt['audit_cost']:.1%}: {e2e['resources_per_s']:,.0f} on vs "
            f"{tgt['audit_off_resources_per_s']:,.0f} off)"
        )
    lines.append(
        "  rounds            "
        + "; ".join(f"{name} " + ", ".join(f"{v:,.0f}" for v in vals) for name, vals in report["rounds"].items())
        + " resources/s"
    )
    if not lake["rows_match"]:
        rows = lake["totals"]["rows"]
        lines.append(f"  !!! LAKE ROW MISMATCH: {rows:,} rows for {e2e['resources']:,} resources posted")
    for phase, load in (("baseline", base["machine_load"]), ("posting", e2e["machine_load"])):
        if load["foreign_share"] + load["steal_share"] > FOREIGN_LOAD_WARNING:
            lines.append(
                f"  !!! other processes used {load['foreign_share']:.0%} of the machine during {phase} "
                f"(hypervisor steal {load['steal_share']:.0%}): its numbers are skewed, rerun on a quiet machine"
            )
    print("\n".join(lines))


# -- main -----------------------------------------------------------------------------------------------


def server_env(workers: int) -> dict[str, str]:
    return os.environ | {"FHIRLAKE_INGEST__VALIDATION_WORKERS": str(workers)}


def run_server_phase(workload: Workload, data_dir: Path, env: dict[str, str], clients: int) -> dict[str, Any]:
    server = Server(data_dir, data_dir.parent / "server.log", env)
    server.start()
    sampler = RssSampler(server.pid)
    sampler.start()
    try:
        creds = credentials(server.url, data_dir, data_dir.parent / f"{data_dir.name}-client")
        ledger = CpuLedger()
        posting = asyncio.run(post_all(server.url, workload, clients, creds))
        load = ledger.close()
        sampler.mark()
    finally:
        drain_s, code = server.stop()
        sampler.halt()
    mb = 2**20
    return {
        "end_to_end": posting_numbers(workload, posting, drain_s) | {"machine_load": load},
        "server": {
            "exit_code": code,
            "clean_exit": code in CLEAN_EXIT,
            "peak_rss_tree_mb": round(sampler.peak_tree / mb, 1),
            "peak_rss_main_mb": round(sampler.peak_main / mb, 1),
            "peak_rss_posting_mb": round(sampler.peak_at_mark / mb, 1),
            "cpu_s": {k: round(v, 2) for k, v in sampler.cpu.items()},
            "log": str(server.log),
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=100_000, help="at least this many resources (default 100000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default 8)")
    parser.add_argument(
        "--validation-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server validation processes (default: cpu count)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data directory and server log")
    parser.add_argument(
        "--no-plaintext-run",
        action="store_true",
        help="skip the server runs with field-level encryption off (they measure what encryption costs)",
    )
    parser.add_argument(
        "--no-audit-off-run",
        action="store_true",
        help="skip the server runs with the audit trail off (they measure what audit costs)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating variant/product server runs; the best of each counts"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    workload = build_workload(args.resources)
    baseline = run_baseline(workload.resources, os.cpu_count() or 1)
    workload.resources = []  # the server phase does not need them; free the memory
    env = server_env(args.validation_workers)
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "resources_requested": args.resources,
            "clients": args.clients,
            "validation_workers": args.validation_workers,
            "server": effective_settings(env),
        },
        "baseline": asdict(baseline)
        | {"seconds": round(baseline.seconds, 3), "resources_per_s": round(baseline.per_s, 1)},
    }
    variants: dict[str, dict[str, str]] = {}
    if not args.no_plaintext_run:
        variants["encryption_off"] = {"FHIRLAKE_SECURITY__ENCRYPTION": "false"}
    if not args.no_audit_off_run:
        variants["audit_off"] = {"FHIRLAKE_AUDIT__ENABLED": "false"}
    on_runs: list[dict[str, Any]] = []
    other: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    # Rounds alternate the variants and the product, each on a fresh data dir: this machine's speed
    # drifts by tens of percent within minutes, so one run of each would compare the drift.
    for n in range(args.rounds):
        for name, extra in variants.items():
            other[name].append(server_run(workload, tmp / f"data-{name}-{n}", env | extra, args.clients))
        on_runs.append(server_run(workload, tmp / f"data-{n}", env, args.clients))
    best = max(on_runs, key=_throughput)
    report |= best
    report["rounds"] = {"product": [_throughput(r) for r in on_runs]}
    report["targets"] = verdict(report["end_to_end"]["resources_per_s"], baseline)
    for name, runs in other.items():
        report[name] = max(runs, key=_throughput)
        report["rounds"][name] = [_throughput(r) for r in runs]
    if "audit_off" in report:
        off = report["audit_off"]["end_to_end"]["resources_per_s"]
        cost = 1 - report["end_to_end"]["resources_per_s"] / off
        report["targets"] |= {
            "audit_off_resources_per_s": off,
            "audit_cost": round(cost, 3),
            "target_audit_cost": TARGET_AUDIT_COST,
            "audit_cost_met": cost <= TARGET_AUDIT_COST,
        }
    if "encryption_off" in report:
        off = report["encryption_off"]["end_to_end"]["resources_per_s"]
        cost = 1 - report["end_to_end"]["resources_per_s"] / off
        report["targets"] |= {
            "encryption_off_resources_per_s": off,
            "encryption_cost": round(cost, 3),
            "target_encryption_cost": TARGET_ENCRYPTION_COST,
            "encryption_cost_met": cost <= TARGET_ENCRYPTION_COST,
        }
    return report


def server_run(workload: Workload, data_dir: Path, env: dict[str, str], clients: int) -> dict[str, Any]:
    """One server phase on a fresh data dir, with its lake check."""
    result = run_server_phase(workload, data_dir, env, clients)
    result["lake"] = lake_info(data_dir, env)
    result["lake"]["rows_match"] = result["lake"]["totals"]["rows"] == workload.total
    return result


def _throughput(run: dict[str, Any]) -> float:
    return float(run["end_to_end"]["resources_per_s"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fhirlake-bench-"))
    report = run(args, tmp)  # on an exception the data directory and server log stay for a post-mortem
    runs = [report, *(report[name] for name in ("encryption_off", "audit_off") if name in report)]  # best of each
    failed = any(
        r["end_to_end"]["failures"] or not r["lake"]["rows_match"] or not r["server"]["clean_exit"] for r in runs
    )
    keep = args.keep_data or bool(failed)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"  written to {args.out}" + (f"; data and server log kept in {tmp}" if keep else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
