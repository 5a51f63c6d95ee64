"""Helpers for the DR tests: an in-process gateway whose callers survive a region switch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi.testclient import TestClient

from fhirlake.server import build_app
from fhirlake.settings import Settings
from security.principal import Role
from tests.fixtures.app import FHIR_JSON, TEST_BASE, TOKEN_URL, flush_lake
from tests.fixtures.canary import Canary
from tests.fixtures.identity import emr_caller, login, register


@dataclass
class Callers:
    """Headers of an EMR integration and an operator, registered once in the primary region.

    The client registry and the token signing key are replicated, so the same callers (and even
    their tokens) work against the secondary after a failover.
    """

    emr: dict[str, str] = field(default_factory=dict)
    ops: dict[str, str] = field(default_factory=dict)


@contextmanager
def gateway(settings: Settings, callers: Callers) -> Iterator[TestClient]:
    """An in-process gateway over the active region of ``settings``."""
    with TestClient(build_app(settings), base_url=TEST_BASE) as client:
        client.headers.update(FHIR_JSON)
        if not callers.emr:
            callers.emr = emr_caller(client, settings.data_dir, TOKEN_URL).headers()
            callers.ops = login(client, register(settings.data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
        client.headers.update(callers.emr)
        yield client


def post_canary(client: TestClient, *, flush: bool = True) -> list[str]:
    """Post a synthetic patient bundle; returns the ``Type/id`` references written."""
    reply = client.post("/fhir", content=Canary().bundle_bytes())
    assert reply.status_code == 200, reply.text
    if flush:
        flush_lake(client)
    return [e["response"]["location"].split("/_history")[0] for e in reply.json()["entry"]]
