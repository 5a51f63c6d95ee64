"""Builds the ASGI app for ``fhirlake serve``: container, lifespan, demo data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

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
        if item.name.endswith(".json"):  # loaded by the server itself, as the operator starting it
            outcome = await service.submit_bundle(item.read_bytes(), f"fhirlake-demo:{item.name}")
            loaded += len(outcome.writes)
    return loaded


DEMO_CLIENT = "demo-emr"


def ensure_demo_client(settings: Settings) -> Path:
    """A demo EMR integration (key, certificate, registration) under ``<data-dir>/demo-client``.

    Demo only: its private key sits in the data dir so the README's commands work out of the box.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fhirlake.bootstrap import open_clients
    from fhirlake.tls_serve import tls_dir
    from security.certs import issue_client
    from security.principal import Role
    from security.secretfile import write_private

    folder = settings.data_dir.resolve() / "demo-client"
    key_path = folder / f"{DEMO_CLIENT}.key"
    registry = open_clients(settings)
    try:
        if registry.get(DEMO_CLIENT) is None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = ec.generate_private_key(ec.SECP384R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_private(key_path, pem)
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            registry.add(DEMO_CLIENT, settings.tenant, Role.EMR_INTEGRATION, "system/*.cruds", public_key_pem=public)
            issue_client(tls_dir(settings), DEMO_CLIENT, folder / "cert")
    finally:
        registry.close()
    return folder


def build_app(settings: Settings, *, demo: bool = False) -> FastAPI:
    from fhirlake.tracing import configure_tracing

    configure_tracing(settings.observability.traces, settings.observability.otlp_endpoint)
    container = build(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        container.start()
        if demo:
            resources_loaded = await load_demo(container)
            folder = ensure_demo_client(settings)
            log.info("demo_loaded", resources=resources_loaded, demo_client=DEMO_CLIENT, demo_client_dir=str(folder))
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
