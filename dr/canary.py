"""Canary load for a drill: writers that note every write the gateway acknowledged.

Each writer creates a Patient and an Observation of that patient per step through the real FHIR
API (``PUT`` with drill-chosen ids, so every acknowledged write is known by type, id and version)
and records the acknowledgement time. A write that got no 2xx is not acknowledged and not counted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx

from dr.errors import DrError
from dr.gateway import DrillClient


@dataclass(frozen=True, slots=True)
class AckedWrite:
    resource_type: str
    id: str
    version: int
    acknowledged_at: float  # epoch seconds

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "reference": self.reference}


def patient_body(rid: str) -> bytes:
    """A synthetic canary patient: no real person, recognisable as drill data."""
    return json.dumps(
        {
            "resourceType": "Patient",
            "id": rid,
            "active": True,
            "name": [{"family": "Drillcanary", "given": ["Dr"]}],
            "gender": "unknown",
            "birthDate": "1970-01-01",
        }
    ).encode()


def observation_body(rid: str, patient: str) -> bytes:
    return json.dumps(
        {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2024-01-01T00:00:00Z",
            "valueQuantity": {"value": 60, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        }
    ).encode()


def put(client: DrillClient, resource_type: str, rid: str, body: bytes) -> AckedWrite | None:
    """``PUT`` one resource; the acknowledged write, or None if it was not acknowledged."""
    try:
        reply = client.request("PUT", f"/fhir/{resource_type}/{rid}", body)
    except (httpx.HTTPError, DrError):
        return None
    if reply.status_code not in (200, 201):
        return None
    version = int(reply.json().get("meta", {}).get("versionId", "1"))
    return AckedWrite(resource_type, rid, version, time.time())


class CanaryLoad:
    """``writers`` threads writing canaries through ``client_of(n)`` until :meth:`stop`."""

    def __init__(self, client_of: Callable[[int], DrillClient], writers: int, prefix: str) -> None:
        self._client_of, self._writers, self._prefix = client_of, writers, prefix
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.acked: list[AckedWrite] = []
        self.refused = 0

    def start(self) -> None:
        for n in range(self._writers):
            thread = threading.Thread(target=self._run, args=(n,), name=f"dr-canary-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, writer: int) -> None:
        client = self._client_of(writer)
        try:
            step = 0
            while not self._stop.is_set():
                patient = f"{self._prefix}-w{writer}-{step}"
                for rtype, rid, body in (
                    ("Patient", patient, patient_body(patient)),
                    ("Observation", f"{patient}-obs", observation_body(f"{patient}-obs", patient)),
                ):
                    ack = put(client, rtype, rid, body)
                    with self._lock:
                        if ack is None:
                            self.refused += 1
                        else:
                            self.acked.append(ack)
                    if ack is None:
                        self._stop.wait(0.05)
                step += 1
        finally:
            client.close()
