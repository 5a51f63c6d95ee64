"""Per-request deadlines, carried in a ContextVar to every dependency call the request makes.

The gateway opens ``deadline(limits.request_timeout_s)`` around each request; threads started
with ``run_in_threadpool`` inherit the context. KMS calls and lake reads call ``check_deadline``
(through ``retry``) before each attempt, and a retry never sleeps past it, so a request whose time
is up fails fast (503) instead of queueing more work behind a slow dependency. ``timeout_for`` is
for a client that takes a per-call timeout; boto3's KMS client has its timeout fixed at creation
(``security.kms.timeout_s``), which bounds one attempt instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from resilience.errors import DeadlineExceededError

_DEADLINE: ContextVar[float | None] = ContextVar("fhirlake_deadline", default=None)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Run the block under a deadline ``seconds`` from now (never later than an enclosing one)."""
    if seconds is None:
        yield
        return
    at = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (never negative), or None outside any deadline."""
    at = _DEADLINE.get()
    return None if at is None else max(0.0, at - time.monotonic())


def check_deadline(operation: str) -> None:
    """Raise DeadlineExceededError if the current deadline has passed."""
    left = remaining()
    if left is not None and left <= 0.0:
        raise DeadlineExceededError(operation)


def timeout_for(default_s: float) -> float:
    """A dependency call's timeout: ``default_s``, or less if the request's deadline is nearer."""
    left = remaining()
    return default_s if left is None else max(0.001, min(default_s, left))
