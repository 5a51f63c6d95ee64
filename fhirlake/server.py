"""Builds the ASGI app for ``fhirlake serve``: container, lifespan, demo data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import structlog
from fastapi import FastAPI

from fhirlake.bootstrap import build
from fhirlake.settings import Settings
from gateway.app import create_app

log = structlog.get_logger("fhirlake.server")


async def load_demo(container: object) -> int:
    """Post the bundled Synthea demo bundles once each (idempotent across restarts)."""
    service = container.service  # type: ignore[attr-defined]
    loaded = 0
    for item in sorted(resources.files("fhirlake.demo").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            outcome = await service.submit_bundle(item.read_bytes(), f"fhirlake-demo:{item.name}")
            loaded += len(outcome.writes)
    return loaded


def build_app(settings: Settings, *, demo: bool = False) -> FastAPI:
    container = build(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        container.start()
        if demo:
            resources_loaded = await load_demo(container)
            log.info("demo_loaded", resources=resources_loaded)
        log.info("serving", host=settings.server.host, port=settings.server.port)
        try:
            yield
        finally:
            container.close()

    app = create_app(container)
    app.router.lifespan_context = lifespan
    return app


DEMO_ENV = "FHIRLAKE_SERVE_DEMO"


def app_from_env() -> FastAPI:
    """App factory for ``fhirlake serve --workers N``: each worker process builds its own container."""
    import os

    from fhirlake import logs

    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    return build_app(settings, demo=os.environ.get(DEMO_ENV) == "1")
