"""Per-client rate and concurrency limits (429 with Retry-After) and load shedding (503)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fhirlake.settings import LimitSettings
from gateway.throttle import ShedMiddleware, Throttle
from ingest.errors import ThrottledError
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, make_settings, open_client
from tests.fixtures.identity import login, register


def test_a_flooding_client_gets_429_while_another_keeps_its_budget(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.limits = LimitSettings(client_rate_per_s=1.0, client_burst=5)
    with open_client(settings) as flooder:
        other = login(flooder, register(settings.data_dir, Role.EMR_INTEGRATION, "system/*.rs"), TOKEN_URL).headers()
        statuses = [flooder.get("/fhir/Patient?_count=1").status_code for _ in range(12)]
        assert statuses[:5] == [200] * 5 and statuses.count(429) >= 6
        refused = flooder.get("/fhir/Patient?_count=1")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["issue"][0]["code"] == "throttled"
        assert [flooder.get("/fhir/Patient?_count=1", headers=other).status_code for _ in range(5)] == [200] * 5
        assert flooder.get("/healthz").status_code == 200  # probes are never throttled


def test_the_bucket_refills_and_in_flight_slots_are_bounded() -> None:
    now = [0.0]
    throttle = Throttle(rate_per_s=2.0, burst=2, client_in_flight=2, clock=lambda: now[0])
    scopes: list[dict[str, Any]] = [{}, {}]
    throttle.admit("a", scopes[0])
    throttle.admit("a", scopes[1])
    now[0] += 10  # tokens are back, but both slots are taken
    with pytest.raises(ThrottledError):
        throttle.admit("a", {})
    scopes[0]["fhirlake.throttle.release"]()
    throttle.admit("a", {})
    with pytest.raises(ThrottledError) as caught:
        throttle.admit("b", {}) or throttle.admit("b", {}) or throttle.admit("b", {})
    assert caught.value.retry_after_s == 1


def test_load_is_shed_past_the_in_flight_limit() -> None:
    gate = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    shed = ShedMiddleware(slow_app, max_in_flight=1)
    sent: list[list[dict[str, Any]]] = [[], []]

    async def call(i: int) -> None:
        async def send(message: dict[str, Any]) -> None:
            sent[i].append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        await shed({"type": "http", "path": "/fhir/Patient", "method": "GET", "headers": []}, receive, send)

    async def scenario() -> None:
        first = asyncio.create_task(call(0))
        await asyncio.sleep(0.01)
        await call(1)  # answered at once: the one slot is busy
        gate.set()
        await first

    asyncio.run(scenario())
    assert sent[0][0]["status"] == 200
    assert sent[1][0]["status"] == 503 and (b"retry-after", b"1") in sent[1][0]["headers"]


def _one_request(app: Any, path: str = "/fhir/Patient") -> dict[str, Any]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    asyncio.run(app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send))
    return sent[0]


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_load_is_shed_past_the_memory_mark_and_resumes_below_it() -> None:
    from telemetry.metrics import THROTTLED

    rss = [900.0]
    shed = ShedMiddleware(_ok_app, max_in_flight=10, max_rss_mb=800.0, rss_mb=lambda: rss[0])
    before = THROTTLED.labels("shed_memory")._value.get()
    refused = _one_request(shed)
    assert refused["status"] == 503 and (b"retry-after", b"1") in refused["headers"]
    assert THROTTLED.labels("shed_memory")._value.get() == before + 1
    assert _one_request(shed, "/healthz")["status"] == 200  # probes are never shed
    rss[0] = 700.0
    assert _one_request(shed)["status"] == 200


def test_resident_memory_is_read_from_proc() -> None:
    from gateway.throttle import ResidentMemory

    value = ResidentMemory()()
    assert value is not None and 10.0 < value < 24 * 1024  # this test process, in MiB
    assert ResidentMemory(statm=Path("/nonexistent/statm"))() is None  # no /proc: memory shedding is off


def test_a_request_deadline_reaches_dependency_calls_in_worker_threads() -> None:
    from starlette.concurrency import run_in_threadpool

    from gateway.throttle import DeadlineMiddleware
    from resilience import remaining

    seen: list[float | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await run_in_threadpool(remaining))  # where KMS, catalog and storage calls run
        await _ok_app(scope, receive, send)

    _one_request(DeadlineMiddleware(app, seconds=7.0))
    _one_request(DeadlineMiddleware(app, seconds=7.0), "/fhir/$import")  # bulk import runs for minutes
    assert seen[0] is not None and 6.0 < seen[0] <= 7.0
    assert seen[1] is None


def test_a_request_past_its_deadline_answers_503_and_writes_nothing(tmp_path: Path) -> None:
    from tests.fixtures.canary import Canary

    settings = make_settings(tmp_path / "data")
    settings.limits = LimitSettings(request_timeout_s=1e-6)  # over before the first KMS call
    with open_client(settings) as client:
        canary = Canary()
        reply = client.post("/fhir", content=canary.bundle_bytes())
        assert reply.status_code == 503, reply.text
        assert reply.json()["resourceType"] == "OperationOutcome" and "Cnry" not in reply.text
    settings = make_settings(tmp_path / "data")
    with open_client(settings) as client:
        found = client.get("/fhir/Patient", params={"identifier": canary.s("Mrn")})
        assert found.status_code == 200 and found.json()["total"] == 0  # the late transaction left nothing
