"""Protection at the edge: per-client token buckets and concurrency limits, and load shedding.

* A **token bucket** per authenticated client (``rate_per_s`` refill, ``burst`` capacity):
  a client past its rate gets 429 with ``Retry-After`` (the seconds until a token is back),
  while every other client keeps its own budget.
* At most ``client_in_flight`` requests of one client run at once (429 beyond).
* At most ``max_in_flight`` requests in all (``ShedMiddleware``): past it, 503 with
  ``Retry-After`` before any work is done — the service sheds load before memory runs out.

Health probes are never throttled or shed. Limits live in memory, per gateway process.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.fhir import fhir_json
from ingest.errors import Issue, ThrottledError
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
    """Refuses work past ``max_in_flight`` concurrent requests and releases per-client slots."""

    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app, self._max = app, max_in_flight
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _EXEMPT:
            await self.app(scope, receive, send)
            return
        if self._in_flight >= self._max:
            THROTTLED.labels("shed_in_flight").inc()
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
