"""Circuit breakers and retries around the two things the lake depends on: the catalog and object
storage (the warehouse: S3 in production, a local directory in the embedded default).

Reads are idempotent, so a failed read is retried with jittered backoff before it counts as an
outage; a commit is not retried here (the writer re-reads the journal position and tries again on
its own schedule, so a commit is never applied twice). Once a breaker is open, lake reads and
commits fail at once with CircuitOpenError (503 with Retry-After at the gateway) while accepted
writes wait durably in the journal. After the retries an outage surfaces as LakeUnavailableError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from lake.errors import LakeUnavailableError
from resilience import Breaker, BreakerPolicy, RetryPolicy, retry

T = TypeVar("T")

CATALOG_FAILURES: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, PoolTimeoutError)
# pyarrow's S3 and local filesystems raise OSError; a missing or forbidden object is not an outage.
STORAGE_FAILURES: tuple[type[BaseException], ...] = (OSError,)
NOT_OUTAGES: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError)
_READ_RETRY = RetryPolicy(attempts=3, base_s=0.05, max_s=0.5)


class LakeGuard:
    """The catalog and object storage breakers of one process."""

    def __init__(self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        policy = policy or BreakerPolicy(failure_threshold=3, open_s=5.0, slow_call_s=30.0)
        self.catalog = Breaker("catalog", policy, CATALOG_FAILURES, clock)
        self.storage = Breaker("object_storage", policy, STORAGE_FAILURES, clock, ignore=NOT_OUTAGES)

    def read(self, fn: Callable[[], T], operation: str, *, catalog: bool = False) -> T:
        """An idempotent read of object storage (and of the catalog if ``catalog``), retried.

        Raises CircuitOpenError while a breaker is open, LakeUnavailableError after the retries.
        """
        return self._outage_as_error(
            lambda: retry(
                self._through(fn, catalog),
                _READ_RETRY,
                self._failures(catalog),
                operation=operation,
                ignore=NOT_OUTAGES,
            ),
            operation,
        )

    def write(self, fn: Callable[[], T], operation: str) -> T:
        """A commit (data files to storage, then the catalog pointer); not retried here."""
        return self._outage_as_error(self._through(fn, True), operation)

    def _through(self, fn: Callable[[], T], catalog: bool) -> Callable[[], T]:
        if not catalog:
            return lambda: self.storage.call(fn)
        return lambda: self.catalog.call(lambda: self.storage.call(fn))

    @staticmethod
    def _failures(catalog: bool) -> tuple[type[BaseException], ...]:
        return CATALOG_FAILURES + STORAGE_FAILURES if catalog else STORAGE_FAILURES

    @staticmethod
    def _outage_as_error(fn: Callable[[], T], operation: str) -> T:
        try:
            return fn()
        except NOT_OUTAGES:
            raise
        except CATALOG_FAILURES as exc:
            raise LakeUnavailableError(f"the Iceberg catalog failed during {operation}") from exc
        except STORAGE_FAILURES as exc:
            raise LakeUnavailableError(f"object storage failed during {operation}") from exc
