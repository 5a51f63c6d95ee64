"""Retries with exponential backoff and full jitter, for idempotent calls only.

Attempt ``n`` (from 0) waits a uniform random time in ``[0, min(max_s, base_s * 2**n)]`` before
the next one ("full jitter": many clients retrying at once spread out instead of arriving
together). A retry never sleeps past the request's deadline, and an open circuit is never
retried: the breaker already knows the answer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from resilience.deadline import check_deadline, remaining
from resilience.errors import CircuitOpenError, DeadlineExceededError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    base_s: float = 0.05
    max_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_s < 0 or self.max_s < self.base_s:
            raise ValueError("retry policy needs attempts >= 1 and 0 <= base_s <= max_s")

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """The pause after failed attempt ``attempt`` (0-based)."""
        return float(rng() * min(self.max_s, self.base_s * (2**attempt)))


def retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...],
    *,
    operation: str,
    ignore: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call ``fn`` until it succeeds, at most ``policy.attempts`` times.

    Only exceptions in ``retry_on`` and not in ``ignore`` are retried; the last one is re-raised. Raises
    DeadlineExceededError if the request's deadline would pass during a pause.
    """
    for attempt in range(policy.attempts):
        check_deadline(operation)
        try:
            return fn()
        except CircuitOpenError:
            raise
        except retry_on as exc:
            if isinstance(exc, ignore) or attempt + 1 >= policy.attempts:
                raise
            pause = policy.backoff(attempt, rng)
            left = remaining()
            if left is not None and pause >= left:
                raise DeadlineExceededError(operation) from None
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover
