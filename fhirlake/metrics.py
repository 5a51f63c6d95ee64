"""The Prometheus text the gateway's ``/metrics`` serves (behind authentication).

Composed here, where every package may be imported: the lake backlog from the
journal and, when a second region exists, the replication lag of ``dr/lag.py``.
Labels are table names only: nothing here can carry PHI.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from fhirlake.bootstrap import Container

log = structlog.get_logger("fhirlake.metrics")


def metrics_text(container: Container) -> str:
    """Gauges of this process's view of the installation, as Prometheus text exposition."""
    journal = container.journal
    rows, oldest_us = journal.pending(journal.committed_seq())
    age = 0.0 if oldest_us is None else max(0.0, time.time() - oldest_us / 1_000_000)
    lines = [
        "# HELP fhirlake_up The gateway answers.",
        "# TYPE fhirlake_up gauge",
        "fhirlake_up 1",
        "# HELP fhirlake_ready The gateway is ready (lake writer healthy, KMS reachable, region not fenced).",
        "# TYPE fhirlake_ready gauge",
        f"fhirlake_ready {int(container.ready())}",
        "# HELP fhirlake_lake_pending_rows Accepted resource versions not yet committed to Iceberg.",
        "# TYPE fhirlake_lake_pending_rows gauge",
        f"fhirlake_lake_pending_rows {rows}",
        "# HELP fhirlake_lake_pending_seconds Age of the oldest accepted row not yet in Iceberg.",
        "# TYPE fhirlake_lake_pending_seconds gauge",
        f"fhirlake_lake_pending_seconds {age:.3f}",
    ]
    return "\n".join(lines) + "\n" + _dr_text(container)


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
