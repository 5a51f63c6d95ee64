"""Protection of fhirlake's dependencies: circuit breakers, retries with backoff, request deadlines.

The package knows no dependency by name. Its callers decide what a failure is and what may be
retried: ``security.keys`` wraps the KMS, ``lake`` the catalog and object storage, ``audit.worm``
the WORM bucket. ``Breakers`` holds one breaker per dependency for ``/metrics`` and ``/readyz``.
"""

from resilience.breaker import Breaker, BreakerPolicy, Breakers, BreakerState
from resilience.deadline import check_deadline, deadline, remaining, timeout_for
from resilience.errors import CircuitOpenError, DeadlineExceededError, ResilienceError
from resilience.retry import RetryPolicy, retry

__all__ = [
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Breakers",
    "CircuitOpenError",
    "DeadlineExceededError",
    "ResilienceError",
    "RetryPolicy",
    "check_deadline",
    "deadline",
    "remaining",
    "retry",
    "timeout_for",
]
