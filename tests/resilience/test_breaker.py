"""The circuit breaker's state machine, with a hand-moved clock."""

from __future__ import annotations

import threading

import pytest

from resilience import Breaker, BreakerPolicy, Breakers, BreakerState, CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Down(Exception):
    pass


def _fail() -> None:
    raise Down("dependency down")


def make(clock: Clock, **policy: float) -> Breaker:
    return Breaker("kms", BreakerPolicy(**policy), (Down,), clock)  # type: ignore[arg-type]


def test_opens_after_threshold_fails_fast_then_probes_and_closes() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=3, open_s=5.0)
    for _ in range(3):
        with pytest.raises(Down):
            breaker.call(_fail)
    assert breaker.state is BreakerState.OPEN
    calls = []
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(lambda: calls.append(1))
    assert calls == []  # the dependency is not touched while open
    assert refused.value.retry_after_s == 5 and refused.value.dependency == "kms"
    clock.now += 5.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is BreakerState.CLOSED


def test_successes_reset_the_count_and_other_errors_do_not_count() -> None:
    breaker = make(Clock(), failure_threshold=2)
    with pytest.raises(Down):
        breaker.call(_fail)
    breaker.call(lambda: None)
    with pytest.raises(Down):
        breaker.call(_fail)
    with pytest.raises(ValueError):
        breaker.call(lambda: int("x"))  # the caller's mistake, not the dependency's
    assert breaker.state is BreakerState.CLOSED


def test_failed_probe_reopens_for_a_full_period() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1, open_s=2.0)
    with pytest.raises(Down):
        breaker.call(_fail)
    clock.now += 2.0
    with pytest.raises(Down):
        breaker.call(_fail)  # the probe
    assert breaker.state is BreakerState.OPEN
    clock.now += 1.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN


def test_slow_calls_count_as_failures() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=2, slow_call_s=1.0)

    def slow() -> str:
        clock.now += 3.0
        return "late"

    assert breaker.call(slow) == "late"
    assert breaker.call(slow) == "late"
    assert breaker.state is BreakerState.OPEN


def test_half_open_lets_exactly_one_probe_through_concurrently() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1, open_s=1.0)
    with pytest.raises(Down):
        breaker.call(_fail)
    clock.now += 1.0
    entered, release = threading.Event(), threading.Event()

    def probe() -> None:
        entered.set()
        release.wait(5)

    worker = threading.Thread(target=breaker.call, args=(probe,))
    worker.start()
    assert entered.wait(5)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)  # a second caller during the probe fails fast
    release.set()
    worker.join(5)
    assert breaker.state is BreakerState.CLOSED


def test_registry_reports_every_state() -> None:
    clock = Clock()
    breakers = Breakers()
    kms = breakers.add(make(clock, failure_threshold=1))
    breakers.add(Breaker("catalog", BreakerPolicy(), (Down,), clock))
    with pytest.raises(Down):
        kms.call(_fail)
    assert breakers.states() == {"kms": BreakerState.OPEN, "catalog": BreakerState.CLOSED}
    assert [s.gauge for s in BreakerState] == [0, 1, 2]
