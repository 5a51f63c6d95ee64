"""What ``/readyz`` answers: each dependency's state and one verdict for the load balancer.

ready       every dependency is healthy.
degraded    still serving, with a dependency impaired in a way that loses and leaks nothing (200, the
            pod stays in rotation): a lake breaker (catalog, object storage) is not closed or the last
            lake commit failed, so accepted writes wait durably in the journal and reads of versions
            that only the lake holds answer 503; or the WORM audit copy is behind while the local,
            hash-chained trail stays durable.
not-ready   PHI cannot be served safely (503, out of rotation): the KMS is unreachable (every PHI
            read and write answers 503), the local audit trail is failing, or the region is fenced
            after a failover.

The report names dependencies and states only, never data (docs/degradation.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhirlake.bootstrap import Container

OK, DEGRADED, DOWN = "ok", "degraded", "down"
WORM_BEHIND_S = 300.0  # a WORM copy further behind than this makes the installation degraded


def readiness(container: Container) -> dict[str, Any]:
    """``{"status": ready|degraded|not-ready, "dependencies": {name: {...}}}``."""
    deps = {
        "kms": _kms(container),
        "catalog": _breaker(container, "catalog"),
        "object_storage": _breaker(container, "object_storage"),
        "lake_writer": _writer(container),
        "audit_trail": {"status": OK if container.auditing.healthy else DOWN},
        "region": {"status": DOWN if container.fenced() else OK},
    }
    if container.worm is not None:
        deps["audit_worm"] = _worm(container)
    statuses = {d["status"] for d in deps.values()}
    verdict = "not-ready" if DOWN in statuses else "degraded" if DEGRADED in statuses else "ready"
    return {"status": verdict, "dependencies": deps}


def _kms(container: Container) -> dict[str, Any]:
    healthy = container.keys.healthy()  # probes the KMS at most once per check interval
    return {"status": OK if healthy else DOWN, "breaker": container.keys.breaker.state.value}


def _breaker(container: Container, name: str) -> dict[str, Any]:
    breaker = container.breakers.get(name)
    state = "closed" if breaker is None else breaker.state.value
    return {"status": OK if state == "closed" else DEGRADED, "breaker": state}


def _writer(container: Container) -> dict[str, Any]:
    journal = container.journal
    rows, oldest_us = journal.pending(journal.committed_seq())
    age = 0.0 if oldest_us is None else max(0.0, time.time() - oldest_us / 1_000_000)
    error = container.lake_writer.last_error
    return {
        "status": OK if error is None else DEGRADED,
        "pending_rows": rows,
        "pending_seconds": round(age, 3),
        **({"last_error": error} if error else {}),  # an exception class name, never a message
    }


def _worm(container: Container) -> dict[str, Any]:
    worm = container.worm
    assert worm is not None
    records, seconds = worm.backlog()
    state = worm.breaker.state.value
    behind = state != "closed" or seconds > WORM_BEHIND_S
    return {
        "status": DEGRADED if behind else OK,
        "breaker": state,
        "backlog_records": records,
        "backlog_seconds": round(seconds, 3),
    }
