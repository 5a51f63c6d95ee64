"""The validation worker pool: ``ingest.prepare`` on every core.

Validation with ``fhir.resources`` is the hot spot of ingestion (2k-4k
resources/s per core), so request bodies go as bytes to a process pool and come
back as prepared entries; the event loop never validates.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from opentelemetry import trace

from ingest import prepare
from ingest.errors import BackpressureError
from ingest.prepared import Limits, PreparedBundle

_WARM_TYPES = ("Patient", "Observation", "Encounter", "Condition", "Claim", "ExplanationOfBenefit", "Bundle")

_tracer = trace.get_tracer("fhirlake.ingest")


def _exit_with_parent(parent: int) -> None:
    """A worker whose server was killed (``kill -9``) would otherwise live on, orphaned, forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _warm_up() -> None:
    from ingest.fhir_types import model_class

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    for name in _WARM_TYPES:
        model_class(name)
    # The models are long-lived: keep them out of every full collection (~5-9% faster validation).
    gc.collect()
    gc.freeze()


class Validator:
    """Runs ``prepare`` off the event loop; ``workers=0`` uses a thread (tests, tiny installs)."""

    def __init__(self, limits: Limits, workers: int) -> None:
        self.limits = limits
        self._workers = workers
        self._executor = self._new_executor()

    def _new_executor(self) -> Executor:
        if self._workers > 0:
            return ProcessPoolExecutor(
                max_workers=self._workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_up
            )
        return ThreadPoolExecutor(max_workers=2, thread_name_prefix="validate")

    async def bundle(self, raw: bytes) -> PreparedBundle:
        return await self._run(prepare.prepare_request, raw, self.limits)

    async def interaction(
        self, raw: bytes | None, method: str, resource_type: str, resource_id: str | None, query: str | None
    ) -> PreparedBundle:
        return await self._run(prepare.prepare_interaction, raw, method, resource_type, resource_id, query, self.limits)

    async def _run(self, func: Callable[..., PreparedBundle], *args: object) -> PreparedBundle:
        executor = self._executor
        try:
            with _tracer.start_as_current_span("validate"):
                return await asyncio.get_running_loop().run_in_executor(executor, func, *args)
        except BrokenProcessPool:
            # A worker died (e.g. killed for memory): replace the pool; the client may retry.
            if self._executor is executor:
                self._executor = self._new_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            raise BackpressureError("validation workers restarted; retry the request") from None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
