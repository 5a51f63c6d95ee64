"""A real gateway process flooded by one client: that client gets 429s with Retry-After, while a
second client's requests keep succeeding within their usual latency."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx
import pytest

from security.principal import Role
from tests.fixtures.canary import Canary
from tests.fixtures.identity import login, register

HEADERS = {"Content-Type": "application/fhir+json"}
FLOOD_S = 3.0


def _latencies(http: httpx.Client, url: str, count: int) -> tuple[list[int], list[float]]:
    statuses, seconds = [], []
    for _ in range(count):
        started = time.perf_counter()
        statuses.append(http.get(url).status_code)
        seconds.append(time.perf_counter() - started)
        time.sleep(0.05)  # a well-behaved client: 20 requests/s at most, well under its limit
    return statuses, seconds


@pytest.mark.slow
def test_a_flooding_client_is_throttled_while_another_keeps_its_latency(server_factory: Any) -> None:
    server = server_factory(FHIRLAKE_LIMITS__CLIENT_RATE_PER_S="50", FHIRLAKE_LIMITS__CLIENT_BURST="50")
    server.start()
    with httpx.Client(timeout=30) as http:
        calm = login(
            http, register(server.data_dir, Role.EMR_INTEGRATION, "system/*.rs"), f"{server.origin}/auth/token"
        )
    flood_headers = {**HEADERS, **server.headers()}
    with httpx.Client(timeout=30, headers=flood_headers) as http:
        reply = http.post(server.base, content=Canary().bundle_bytes())
        assert reply.status_code == 200, reply.text
        patient = reply.json()["entry"][0]["response"]["location"].split("/_history")[0]
    url = f"{server.base}/{patient}"

    with httpx.Client(timeout=30, headers={**HEADERS, **calm.headers()}) as http:
        _latencies(http, url, 5)  # warm up connections and the key cache
        base_statuses, baseline = _latencies(http, url, 20)
    assert base_statuses == [200] * 20

    stop = threading.Event()
    flood: list[httpx.Response] = []

    def flooder() -> None:
        with httpx.Client(timeout=30, headers=flood_headers) as http:
            while not stop.is_set():
                flood.append(http.get(url))

    threads = [threading.Thread(target=flooder) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the flooder has spent its burst
        with httpx.Client(timeout=30, headers={**HEADERS, **calm.headers()}) as http:
            statuses, during = _latencies(http, url, 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    refused = [r for r in flood if r.status_code == 429]
    assert len(refused) > len(flood) // 2, f"{len(refused)} of {len(flood)} flood requests throttled"
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert {r.status_code for r in flood} <= {200, 429}
    assert statuses == [200] * 20  # the calm client is never throttled
    usual, now = statistics.median(baseline), statistics.median(during)
    # Two cores serve the flood's 429s too; "usual latency" allows 3x or +100 ms, whichever is larger.
    assert now <= max(3 * usual, usual + 0.1), f"median {now * 1000:.1f} ms vs usual {usual * 1000:.1f} ms"
    server.stop()
