"""CPU accounting and the validation-only baseline of the ingestion benchmark."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
import psutil

_BASELINE_CHUNK = 256


def _tree_cpu_s() -> float:
    """CPU seconds of this process and all its descendants (the server, its workers, baseline workers)."""
    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _system_cpu_s() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine; steal is time a hypervisor gave to other guests."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return float(busy), float(getattr(t, "steal", 0.0))


class CpuLedger:
    """How much CPU processes outside this benchmark used during a timed phase (they skew the numbers)."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._own, (self._busy, self._steal) = _tree_cpu_s(), _system_cpu_s()

    def close(self) -> dict[str, float]:
        capacity = (time.perf_counter() - self._wall) * (os.cpu_count() or 1)
        busy, steal = _system_cpu_s()
        own = _tree_cpu_s() - self._own
        foreign = max(0.0, busy - self._busy - own)
        return {
            "own_cpu_s": round(own, 2),
            "foreign_cpu_s": round(foreign, 2),
            "foreign_share": round(foreign / capacity, 3),
            "steal_share": round((steal - self._steal) / capacity, 3),
        }


# -- validation-only baseline (runs in pool workers) ----------------------------------------------

_MODELS: dict[str, Any] = {}


def _model(resource_type: str) -> Any:
    model = _MODELS.get(resource_type)
    if model is None:
        from fhir.resources.R4B import get_fhir_model_class

        model = _MODELS[resource_type] = get_fhir_model_class(resource_type)
    return model


def _baseline_init(samples: list[bytes], ready: Any) -> None:
    for raw in samples:
        obj = orjson.loads(raw)
        _model(obj["resourceType"]).model_validate(obj)
    ready.wait()


def _validate_chunk(chunk: list[bytes]) -> int:
    for raw in chunk:
        obj = orjson.loads(raw)
        _model(obj["resourceType"]).model_validate(obj)
    return len(chunk)


@dataclass(frozen=True, slots=True)
class Baseline:
    workers: int
    resources: int
    seconds: float
    machine_load: dict[str, float]

    @property
    def per_s(self) -> float:
        return self.resources / self.seconds


def run_baseline(resources: list[bytes], workers: int) -> Baseline:
    samples = list({orjson.loads(r)["resourceType"]: r for r in resources}.values())
    chunks = [resources[i : i + _BASELINE_CHUNK] for i in range(0, len(resources), _BASELINE_CHUNK)]
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(workers + 1)
    with ctx.Pool(workers, initializer=_baseline_init, initargs=(samples, ready)) as pool:
        ready.wait(timeout=300)  # every worker has imported and exercised each model class
        started, ledger = time.perf_counter(), CpuLedger()
        done = sum(pool.imap_unordered(_validate_chunk, chunks))
        seconds, load = time.perf_counter() - started, ledger.close()
    return Baseline(workers, done, seconds, load)


# -- the server under test ------------------------------------------------------------------------
