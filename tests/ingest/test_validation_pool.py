"""A validation worker that dies costs one retry, not the service."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ingest.errors import BackpressureError
from ingest.prepared import Limits
from ingest.validation import Validator
from tests.fixtures.data import synthea_paths


def test_pool_recovers_after_a_worker_is_killed() -> None:
    validator = Validator(Limits(max_depth=64, max_entries=1000), workers=1)
    body = synthea_paths()[0].read_bytes()

    async def scenario() -> None:
        prepared = await validator.bundle(body)
        assert prepared.resource_count > 0
        pool = validator._executor
        for pid in list(pool._processes):  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(BackpressureError):
            await validator.bundle(body)
        again = await validator.bundle(body)
        assert again.resource_count == prepared.resource_count

    try:
        asyncio.run(scenario())
    finally:
        validator.close()
