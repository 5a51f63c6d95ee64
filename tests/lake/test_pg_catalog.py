"""The Iceberg catalog in PostgreSQL (the production profile), and that database cut off.

Documented behaviour (docs/degradation.md): while the catalog cannot be reached, writes keep being
accepted into the durable journal, versions only the lake holds answer 503, the catalog breaker
opens and /readyz says degraded; once the database is back everything accepted is committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from tests.fixtures.app import container_of, make_settings, open_client
from tests.fixtures.canary import Canary
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.postgres import postgres_address, private_schema, via_port
from tests.fixtures.wait import location_of, wait_for


@pytest.fixture
def catalog_url() -> Iterator[str]:
    with private_schema("catalog") as url:
        yield url


def test_tables_live_in_postgresql_and_serve_reads(catalog_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", hot_retention_s=0.0, catalog_url=SecretStr(catalog_url))
    with open_client(settings) as client:
        canary = Canary()
        reply = client.post("/fhir", content=canary.bundle_bytes())
        assert reply.status_code == 200, reply.text
        container_of(client).lake_writer.flush()
        assert canary.s("Family") in client.get(f"/fhir/{location_of(reply)}").text  # from the lake
    assert not (tmp_path / "data" / "lake" / "catalog.db").exists()  # no SQLite catalog beside it
    engine = create_engine(catalog_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT table_name, metadata_location FROM iceberg_tables")).all()
    engine.dispose()
    assert {"patient", "condition", "observation"} <= {name for name, _ in rows}
    assert all(location and "canary" not in location.lower() for _, location in rows)


@pytest.mark.slow
def test_catalog_database_cut_off_degrades_and_recovers_without_loss(catalog_url: str, tmp_path: Path) -> None:
    with TcpProxy(*postgres_address()) as proxy:
        url = SecretStr(via_port(catalog_url, proxy.port))
        settings = make_settings(tmp_path / "data", hot_retention_s=0.0, catalog_url=url, breaker_open_s=1.0)
        with open_client(settings) as client:
            container = container_of(client)
            old = Canary()
            cold = location_of(client.post("/fhir", content=old.bundle_bytes()))
            container.lake_writer.flush()
            container.catalog.table("patient", fresh=True)  # pooled connections exist now

            proxy.block()
            new = Canary()
            accepted = client.post("/fhir", content=new.bundle_bytes())
            assert accepted.status_code == 200, accepted.text  # journaled: acknowledged
            hot = location_of(accepted)
            assert new.s("Family") in client.get(f"/fhir/{hot}").text
            committed = container.journal.committed_seq()
            for _ in range(3):  # fresh loads hit the database
                with pytest.raises(Exception):  # noqa: B017 (LakeUnavailableError, then CircuitOpenError)
                    container.catalog.table("patient", fresh=True)
            assert container.breakers.states()["catalog"].value == "open"
            ready = client.get("/readyz").json()
            assert ready["status"] == "degraded" and ready["dependencies"]["catalog"]["breaker"] == "open"
            assert container.journal.committed_seq() == committed  # nothing half-committed

            proxy.unblock()
            assert wait_for(lambda: client.get("/readyz").json()["status"] == "ready", timeout=60)
            assert wait_for(lambda: container.journal.committed_seq() > committed, timeout=30)
            assert old.s("Family") in client.get(f"/fhir/{cold}").text
            assert new.s("Family") in client.get(f"/fhir/{hot}").text
