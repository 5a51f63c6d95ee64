"""``fhirlake writer``: the Iceberg committer as its own process (Kubernetes ``writer`` Deployment).

Gateways run with ``lake.writer_in_gateway=false`` and only append to the journal; this process
holds ``lake/writer.lock``, drains the journal into Iceberg in group commits, and on SIGTERM
commits everything accepted before it exits. A second writer started beside it stays on standby
(not ready) until the lock is free. It serves, on a plain-HTTP health port for the kubelet:

* ``GET /healthz``: 200 while the process runs;
* ``GET /readyz``: 200 while it holds the lock and its breakers are closed, else 503; JSON with
  the pending backlog, breaker states and the last error's class name — never data.

``/metrics`` (the commit instruments live in this process) is served only with
``--metrics-token-file``, to callers presenting that bearer token.
"""

from __future__ import annotations

import argparse
import hmac
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("fhirlake.writer")


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    writer = sub.add_parser("writer", help="run the Iceberg committer as its own process")
    writer.add_argument("--health-host", default="127.0.0.1", help="address of the health port")
    writer.add_argument("--health-port", type=int, default=8081, help="health port (0: any free port)")
    writer.add_argument("--metrics-token-file", type=Path, help="bearer token that /metrics requires")
    add_data_dir(writer)
    writer.set_defaults(func=cmd_writer)


class WriterProcess:
    """Journal, catalog and committer of one writer process, and its health report."""

    def __init__(self, settings: Any) -> None:
        from dr.region import RegionGuard, active_region
        from fhirlake.bootstrap import Paths, open_catalog, open_journal, open_lake_writer

        region = active_region(settings)
        guard = RegionGuard(settings, region)
        guard.check()  # a fenced region's writer does not start
        paths = Paths(region.root)
        self.journal = open_journal(settings, paths, guard)
        self.catalog = open_catalog(settings)
        self.writer = open_lake_writer(settings, paths, self.catalog, self.journal)

    def start(self) -> None:
        self.writer.start()

    def report(self) -> dict[str, Any]:
        rows, oldest_us = self.journal.pending(self.journal.committed_seq())
        age = 0.0 if oldest_us is None else max(0.0, time.time() - oldest_us / 1_000_000)
        guard = self.catalog.guard
        breakers = {b.dependency: b.state.value for b in (guard.catalog, guard.storage)}
        committing = self.writer.holds_lock()
        ok = committing and self.writer.last_error is None and set(breakers.values()) == {"closed"}
        status = "ready" if ok else "standby" if not committing else "degraded"
        report = {"status": status, "pending_rows": rows, "pending_seconds": round(age, 3), "breakers": breakers}
        if self.writer.last_error:
            report["last_error"] = self.writer.last_error
        return report

    def stop(self) -> None:
        """Commit everything accepted so far, then release the lock and the journal."""
        self.writer.stop(drain=True)
        self.journal.close()


def _handler(process: WriterProcess, token: bytes | None) -> type[BaseHTTPRequestHandler]:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply(200, {"status": "ok"})
            elif self.path == "/readyz":
                report = process.report()
                self._reply(200 if report["status"] == "ready" else 503, report)
            elif self.path == "/metrics" and token is not None:
                self._metrics()
            else:
                self._reply(404, {"status": "not-found"})

        def _metrics(self) -> None:
            from prometheus_client import generate_latest

            from telemetry.metrics import REGISTRY

            given = self.headers.get("Authorization", "").removeprefix("Bearer ").encode()
            if token is None or not hmac.compare_digest(given, token):
                self._reply(401, {"status": "unauthorized"})
                return
            self._send(200, generate_latest(REGISTRY), "text/plain; version=0.0.4; charset=utf-8")

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, orjson.dumps(body), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the log; nothing here is worth a line

    return Health


def cmd_writer(args: argparse.Namespace) -> int:
    from fhirlake import logs

    settings = args.settings_of(args)
    logs.configure(settings.log_level, settings.log_json)
    token = args.metrics_token_file.read_bytes().strip() if args.metrics_token_file else None
    process = WriterProcess(settings)
    server = ThreadingHTTPServer((args.health_host, args.health_port), _handler(process, token))
    server.daemon_threads = True
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    threading.Thread(target=server.serve_forever, name="writer-health", daemon=True).start()
    process.start()
    log.info("writer_started", host=args.health_host, port=server.server_address[1])
    stopping.wait()
    log.info("writer_draining")
    server.shutdown()
    process.stop()
    log.info("writer_stopped")
    return 0
