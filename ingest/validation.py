"""The validation worker pool: ``ingest.prepare`` on every core.

Validation with ``fhir.resources`` is the hot spot of ingestion (2k-4k
resources/s per core), so request bodies go as bytes to a process pool and come
back as prepared entries; the event loop never validates.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from ingest import prepare
from ingest.prepared import Limits, PreparedBundle

_WARM_TYPES = ("Patient", "Observation", "Encounter", "Condition", "Claim", "ExplanationOfBenefit", "Bundle")


def _warm_up() -> None:
    from ingest.fhir_types import model_class

    for name in _WARM_TYPES:
        model_class(name)


class Validator:
    """Runs ``prepare`` off the event loop; ``workers=0`` uses a thread (tests, tiny installs)."""

    def __init__(self, limits: Limits, workers: int) -> None:
        self.limits = limits
        self._executor: Executor
        if workers > 0:
            self._executor = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_up
            )
        else:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="validate")

    async def bundle(self, raw: bytes) -> PreparedBundle:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, prepare.prepare_request, raw, self.limits)

    async def interaction(
        self, raw: bytes | None, method: str, resource_type: str, resource_id: str | None, query: str | None
    ) -> PreparedBundle:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, prepare.prepare_interaction, raw, method, resource_type, resource_id, query, self.limits
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
