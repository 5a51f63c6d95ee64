"""The Prometheus text the gateway's ``/metrics`` serves (behind authentication).

Two parts: the process-wide instruments of ``telemetry.metrics`` (requests, ingest, commits, KMS,
key cache, audit, throttling, process RSS/CPU), recorded where the work happens; and the gauges of
this installation read at scrape time, composed here where every package may be imported — the
lake backlog from the journal, readiness, circuit breaker states and, when a second region exists,
the replication lag of ``dr/lag.py``. Labels are route templates, table, operation, dependency and
reason names only: nothing here can carry PHI.

With ``serve --workers N`` the processes keep their counters and histograms in files under
``<data-dir>/run/metrics`` (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``),
so whichever process answers a scrape serves the sum of all; per-process RSS/CPU are then left out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from telemetry.metrics import REGISTRY

if TYPE_CHECKING:
    from fhirlake.bootstrap import Container

log = structlog.get_logger("fhirlake.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def metrics_text(container: Container) -> str:
    """The instruments, then the installation's gauges, as Prometheus text exposition."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_InstallationCollector(container))
    return (_instruments() + generate_latest(scrape)).decode() + _dr_text(container)


def _instruments() -> bytes:
    if not os.environ.get(MULTIPROC_ENV):
        return generate_latest(REGISTRY)
    every_process = CollectorRegistry()
    MultiProcessCollector(every_process)  # type: ignore[no-untyped-call]
    return generate_latest(every_process)


class _InstallationCollector(Collector):
    """Gauges computed when scraped: they describe shared state, not this process's history."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def collect(self) -> Iterator[Metric]:
        container = self._container
        yield _gauge("fhirlake_up", "The gateway answers.", 1)
        status = container.readiness()["status"]
        yield _gauge(
            "fhirlake_ready",
            "/readyz answers 200: ready or degraded (KMS reachable, audit trail durable, region not fenced).",
            int(status != "not-ready"),
        )
        yield _gauge(
            "fhirlake_degraded",
            "Serving with a dependency impaired (lake breaker open, writer failing, WORM copy behind).",
            int(status == "degraded"),
        )
        journal = container.journal
        rows, oldest_us = journal.pending(journal.committed_seq())
        age = 0.0 if oldest_us is None else max(0.0, time.time() - oldest_us / 1_000_000)
        yield _gauge("fhirlake_lake_pending_rows", "Accepted resource versions not yet committed to Iceberg.", rows)
        yield _gauge("fhirlake_lake_pending_seconds", "Age of the oldest accepted row not yet in Iceberg.", age)
        breakers = GaugeMetricFamily(
            "fhirlake_circuit_breaker_state",
            "Circuit breaker of a dependency: 0 closed, 1 half-open (trial call), 2 open (failing fast).",
            labels=["dependency"],
        )
        for name, state in sorted(container.breaker_states().items()):
            breakers.add_metric([name], BREAKER_VALUES[state])
        yield breakers


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _dr_text(container: Container) -> str:
    from dr.lag import prometheus_text, replication_lag

    try:
        return prometheus_text(replication_lag(container.settings))
    except Exception as exc:  # no second region yet, or it is unreachable: say so, do not fail the scrape
        log.info("dr_lag_unavailable", error=type(exc).__name__)
        return (
            "# HELP fhirlake_dr_available Replication lag could be read.\n"
            "# TYPE fhirlake_dr_available gauge\nfhirlake_dr_available 0\n"
        )
