"""Protection at the edge: per-client token buckets and concurrency limits, and load shedding.

* A **token bucket** per authenticated client (``rate_per_s`` refill, ``burst`` capacity):
  a client past its rate gets 429 with ``Retry-After`` (the seconds until a token is back),
  while every other client keeps its own budget.
* At most ``client_in_flight`` requests of one client run at once (429 beyond).
* At most ``max_in_flight`` requests in all (``ShedMiddleware``): past it, 503 with
  ``Retry-After`` before any work is done. Past ``max_rss_mb`` of resident memory, new requests
  are shed the same way (reason ``shed_memory``) until requests in flight have finished and
  memory is back under the mark — the service sheds load before memory runs out.
* Every request runs under a deadline (``DeadlineMiddleware``, ``limits.request_timeout_s``) that
  dependency calls honour (``resilience.deadline``); bulk ``$import`` and export downloads, which
  legitimately run for minutes, are exempt.

Health probes are never throttled or shed. Limits live in memory, per gateway process.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.fhir import fhir_json
from ingest.errors import Issue, ThrottledError
from resilience import deadline
from telemetry.metrics import THROTTLED

_EXEMPT = frozenset({"/healthz", "/readyz"})
_RELEASE = "fhirlake.throttle.release"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


class Throttle:
    """Token buckets and in-flight counts per client id."""

    def __init__(
        self, rate_per_s: float, burst: int, client_in_flight: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate, self._burst, self._max_in_flight = rate_per_s, float(burst), client_in_flight
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, client: str, scope: Scope) -> None:
        """Take a token and an in-flight slot for ``client``; raises ThrottledError (429).

        The slot is given back when the response has been sent (``ShedMiddleware``).
        """
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = _Bucket(self._burst, now)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) * self._rate)
            bucket.stamp = now
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / self._rate
                THROTTLED.labels("client_rate").inc()
                raise _throttled("request rate limit of this client exceeded", wait)
            if bucket.in_flight >= self._max_in_flight:
                THROTTLED.labels("client_in_flight").inc()
                raise _throttled("too many concurrent requests from this client", 1.0)
            bucket.tokens -= 1.0
            bucket.in_flight += 1
        scope[_RELEASE] = lambda: self._release(client)

    def _release(self, client: str) -> None:
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is not None and bucket.in_flight > 0:
                bucket.in_flight -= 1


def _throttled(why: str, wait_s: float) -> ThrottledError:
    error = ThrottledError("throttled", [Issue("throttled", why)])
    error.retry_after_s = max(1, math.ceil(wait_s))
    return error


class ShedMiddleware:
    """Refuses work past ``max_in_flight`` concurrent requests or ``max_rss_mb`` of resident memory,
    and releases per-client slots."""

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        max_rss_mb: float | None = None,
        rss_mb: Callable[[], float | None] | None = None,
    ) -> None:
        self.app, self._max = app, max_in_flight
        self._max_rss = max_rss_mb
        self._rss = rss_mb or ResidentMemory()
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _EXEMPT:
            await self.app(scope, receive, send)
            return
        reason = self._shed_reason()
        if reason is not None:
            THROTTLED.labels(reason).inc()
            issue = Issue("transient", "the service is at capacity; retry later")
            reply = fhir_json(
                {"resourceType": "OperationOutcome", "issue": [issue.as_fhir()]}, 503, {"Retry-After": "1"}
            )
            await reply(scope, receive, send)
            return
        self._in_flight += 1  # one event loop per process: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1
            release = scope.get(_RELEASE)
            if release is not None:
                release()

    def _shed_reason(self) -> str | None:
        if self._in_flight >= self._max:
            return "shed_in_flight"
        if self._max_rss is not None:
            rss = self._rss()
            if rss is not None and rss >= self._max_rss:
                return "shed_memory"
        return None


class ResidentMemory:
    """This process's resident set size in MiB, read from ``/proc`` at most every ``every_s``."""

    def __init__(self, every_s: float = 0.25, statm: Path = Path("/proc/self/statm")) -> None:
        self._every, self._statm = every_s, statm
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._at = float("-inf")
        self._value: float | None = None

    def __call__(self) -> float | None:
        now = time.monotonic()
        if now - self._at >= self._every:
            self._at = now
            try:
                pages = int(self._statm.read_text().split()[1])
            except (OSError, ValueError, IndexError):
                self._value = None  # not Linux: memory shedding is off, in-flight shedding stays
            else:
                self._value = pages * self._page / (1024 * 1024)
        return self._value


_NO_DEADLINE = ("/$import", "/$export-file/")  # run for minutes by design


class DeadlineMiddleware:
    """Runs each request under ``resilience.deadline(seconds)``; threads it starts inherit it."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self._seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or any(marker in path for marker in _NO_DEADLINE):
            await self.app(scope, receive, send)
            return
        with deadline(self._seconds):
            await self.app(scope, receive, send)
