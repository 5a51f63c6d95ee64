"""Errors raised by the resilience package.

ResilienceError                 (fhirlake.errors.FhirlakeError)
 ├── CircuitOpenError           a dependency's breaker is open: fail fast (503, Retry-After)
 └── DeadlineExceededError      the request's deadline passed before a dependency call (503)
"""

from __future__ import annotations

import math

from fhirlake.errors import FhirlakeError


class ResilienceError(FhirlakeError):
    code = "resilience"


class CircuitOpenError(ResilienceError):
    code = "circuit-open"

    def __init__(self, dependency: str, retry_after_s: float) -> None:
        super().__init__(f"{dependency} is unavailable (circuit open); retry later")
        self.dependency = dependency
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class DeadlineExceededError(ResilienceError):
    code = "deadline-exceeded"

    def __init__(self, operation: str) -> None:
        super().__init__(f"the request ran out of time before {operation}")
        self.operation = operation
