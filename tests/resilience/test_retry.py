"""Retries back off exponentially with full jitter and respect deadlines and open circuits."""

from __future__ import annotations

import time

import pytest

from resilience import CircuitOpenError, DeadlineExceededError, RetryPolicy, deadline, retry, timeout_for
from resilience.deadline import check_deadline, remaining


class Flaky:
    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or ConnectionError("down")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_retries_until_success_with_growing_capped_pauses() -> None:
    pauses: list[float] = []
    flaky = Flaky(3)
    policy = RetryPolicy(attempts=4, base_s=0.1, max_s=0.3)
    result = retry(flaky, policy, (ConnectionError,), operation="kms", sleep=pauses.append, rng=lambda: 1.0)
    assert result == "ok" and flaky.calls == 4
    assert pauses == pytest.approx([0.1, 0.2, 0.3])  # 0.1 * 2**n, capped at max_s


def test_full_jitter_draws_from_zero_to_the_cap() -> None:
    policy = RetryPolicy(attempts=5, base_s=0.1, max_s=10.0)
    assert policy.backoff(3, rng=lambda: 0.0) == 0.0
    assert policy.backoff(3, rng=lambda: 0.5) == pytest.approx(0.4)


def test_gives_up_after_the_last_attempt_and_never_retries_other_errors() -> None:
    flaky = Flaky(10)
    with pytest.raises(ConnectionError):
        retry(flaky, RetryPolicy(attempts=3), (ConnectionError,), operation="s3", sleep=lambda _s: None)
    assert flaky.calls == 3
    wrong = Flaky(1, ValueError("bad request"))
    with pytest.raises(ValueError):
        retry(wrong, RetryPolicy(attempts=3), (ConnectionError,), operation="s3", sleep=lambda _s: None)
    assert wrong.calls == 1


def test_an_open_circuit_is_not_retried() -> None:
    refused = Flaky(5, CircuitOpenError("kms", 3))
    with pytest.raises(CircuitOpenError):
        retry(refused, RetryPolicy(attempts=3), (Exception,), operation="kms", sleep=lambda _s: None)
    assert refused.calls == 1


def test_deadline_bounds_timeouts_and_stops_retries() -> None:
    assert remaining() is None and timeout_for(5.0) == 5.0
    with deadline(0.5):
        left = remaining()
        assert left is not None and 0.4 < left <= 0.5
        assert timeout_for(5.0) <= 0.5
        with deadline(10.0):
            assert timeout_for(5.0) <= 0.5  # an inner deadline never extends the outer one
        flaky = Flaky(10)
        with pytest.raises(DeadlineExceededError):
            retry(
                flaky,
                RetryPolicy(attempts=5, base_s=1.0, max_s=1.0),
                (ConnectionError,),
                operation="kms",
                rng=lambda: 1.0,
            )
        assert flaky.calls == 1  # a 1 s pause would pass the deadline: no sleep, fail now
    with deadline(0.01):
        time.sleep(0.02)
        with pytest.raises(DeadlineExceededError) as late:
            check_deadline("catalog.load_table")
        assert "catalog.load_table" in late.value.message
    assert remaining() is None
