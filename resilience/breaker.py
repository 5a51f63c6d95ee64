"""Circuit breakers: stop calling a dependency that keeps failing, and find out when it is back.

    CLOSED ──(failure_threshold failures or slow calls in a row)──▶ OPEN
    OPEN ──(open_s elapsed)──▶ HALF_OPEN: one probe call at a time is let through
    HALF_OPEN ──probe succeeds──▶ CLOSED        HALF_OPEN ──probe fails──▶ OPEN

While open, ``call`` raises CircuitOpenError at once (its ``retry_after_s`` is the time left),
so requests fail in microseconds instead of each waiting for a timeout, and the dependency is
not flooded while it recovers. A call slower than ``slow_call_s`` counts as a failure even if it
returned: a KMS answering in 10 s is as bad as one that does not answer. The clock is injected
so tests move time by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from resilience.errors import CircuitOpenError
from telemetry.metrics import BREAKER_TRANSITIONS

T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def gauge(self) -> int:
        """The value of ``fhirlake_circuit_breaker_state``: 0 closed, 1 half-open, 2 open."""
        return {"closed": 0, "half_open": 1, "open": 2}[self.value]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5
    open_s: float = 5.0
    slow_call_s: float | None = None

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.open_s <= 0:
            raise ValueError("a breaker needs failure_threshold >= 1 and open_s > 0")


class Breaker:
    """One dependency's breaker. ``failures`` are the exception types that count against it,
    except those also in ``ignore`` (a missing file is an ``OSError`` but not an outage)."""

    def __init__(
        self,
        dependency: str,
        policy: BreakerPolicy,
        failures: tuple[type[BaseException], ...],
        clock: Callable[[], float] = time.monotonic,
        *,
        ignore: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.dependency, self.policy = dependency, policy
        self._failures, self._clock, self._ignore = failures, clock, ignore
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failed = 0
        self._opened_at = 0.0
        self._probing = False

    def __repr__(self) -> str:
        return f"Breaker({self.dependency!r}, {self.state.value})"

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        with self._lock:
            if self._current() is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.policy.open_s - self._clock())

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` through the breaker.

        Raises CircuitOpenError without calling ``fn`` while open (or while another probe runs),
        else whatever ``fn`` raises.
        """
        probe = self._admit()
        started = self._clock()
        try:
            result = fn()
        except self._failures as exc:
            self._record(isinstance(exc, self._ignore), probe)  # e.g. a missing object is no outage
            raise
        except BaseException:
            self._record(True, probe)  # not the dependency's fault (e.g. a bad request)
            raise
        slow = self.policy.slow_call_s is not None and self._clock() - started > self.policy.slow_call_s
        self._record(not slow, probe)
        return result

    def check(self) -> None:
        """Raise CircuitOpenError if a call would be refused now (no probe slot is taken)."""
        with self._lock:
            if self._current() is BreakerState.OPEN or (self._state is BreakerState.HALF_OPEN and self._probing):
                raise CircuitOpenError(self.dependency, self._left())

    def _admit(self) -> bool:
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return False
            if state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            raise CircuitOpenError(self.dependency, self._left())

    def _record(self, ok: bool, probe: bool) -> None:
        with self._lock:
            if probe:
                self._probing = False
            if ok:
                self._failed = 0
                if self._current() is not BreakerState.CLOSED and (probe or self._state is BreakerState.HALF_OPEN):
                    self._move(BreakerState.CLOSED)
                return
            self._failed += 1
            state = self._current()
            if state is BreakerState.HALF_OPEN or (
                state is BreakerState.CLOSED and self._failed >= self.policy.failure_threshold
            ):
                self._opened_at = self._clock()
                self._move(BreakerState.OPEN)

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.policy.open_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def _left(self) -> float:
        return max(0.0, self._opened_at + self.policy.open_s - self._clock()) or 1.0

    def _move(self, to: BreakerState) -> None:
        if to is not self._state:
            self._state = to
            BREAKER_TRANSITIONS.labels(self.dependency, to.value).inc()


class Breakers:
    """The breakers of one process, by dependency name (``kms``, ``object_storage``, …)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Breaker] = {}

    def add(self, breaker: Breaker) -> Breaker:
        self._by_name[breaker.dependency] = breaker
        return breaker

    def __iter__(self) -> Iterator[Breaker]:
        return iter(list(self._by_name.values()))

    def get(self, dependency: str) -> Breaker | None:
        return self._by_name.get(dependency)

    def states(self) -> dict[str, BreakerState]:
        return {b.dependency: b.state for b in self}
