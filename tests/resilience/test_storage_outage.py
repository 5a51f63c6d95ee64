"""Object storage (an S3 warehouse on moto, behind a loopback proxy) cut off and restored.

Documented behaviour (docs/degradation.md): writes keep being accepted into the durable journal,
versions only the lake holds answer 503 (fast, once the breaker is open), /readyz says degraded
with the object_storage breaker open, nothing is half-committed, and once storage is back the
breaker closes by itself and the writer commits the backlog — nothing acknowledged is lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from fhirlake.settings import RegionSettings
from tests.fixtures.app import container_of, make_settings, open_client
from tests.fixtures.canary import Canary
from tests.fixtures.moto import aws_environ, required_moto
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.wait import location_of, wait_for


@pytest.fixture
def s3_warehouse() -> Iterator[TcpProxy]:
    with aws_environ(), required_moto() as url:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="lake")
        target = urlparse(url)
        assert target.hostname is not None and target.port is not None
        with TcpProxy(target.hostname, target.port) as proxy:
            yield proxy


@pytest.mark.slow
def test_object_storage_outage_degrades_reads_keeps_writes_and_recovers(s3_warehouse: TcpProxy, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", hot_retention_s=0.0, breaker_open_s=1.0)
    settings.dr.regions = {"primary": RegionSettings(warehouse="s3://lake/warehouse", s3_endpoint=s3_warehouse.url)}
    with open_client(settings) as client:
        container = container_of(client)
        old = Canary()
        reply = client.post("/fhir", content=old.bundle_bytes())
        assert reply.status_code == 200, reply.text
        cold = location_of(reply)
        container.lake_writer.flush()  # in the bucket; the journal no longer keeps its body
        assert old.s("Family") in client.get(f"/fhir/{cold}").text

        s3_warehouse.block()
        new = Canary()
        accepted = client.post("/fhir", content=new.bundle_bytes())
        assert accepted.status_code == 200, accepted.text  # durable in the journal, acknowledged
        hot = location_of(accepted)
        assert new.s("Family") in client.get(f"/fhir/{hot}").text  # not yet in the lake: served from the journal
        failed = client.get(f"/fhir/{cold}")
        assert failed.status_code == 503 and failed.json()["resourceType"] == "OperationOutcome"
        assert "Cnry" not in failed.text
        assert wait_for(lambda: container.breakers.states()["object_storage"].value == "open", timeout=30)
        started = time.monotonic()
        fast = client.get(f"/fhir/{cold}")
        assert fast.status_code == 503 and int(fast.headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 0.5  # the open breaker answers without waiting for S3
        committed = container.journal.committed_seq()
        with pytest.raises(Exception):  # noqa: B017 (LakeUnavailableError or CircuitOpenError)
            container.lake_writer.flush()
        assert container.journal.committed_seq() == committed  # nothing half-committed
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["dependencies"]["object_storage"]["breaker"] == "open"
        assert ready.json()["dependencies"]["lake_writer"]["pending_rows"] > 0
        metrics = client.get("/metrics", headers=_ops(client, settings)).text
        assert 'fhirlake_circuit_breaker_state{dependency="object_storage"} 2.0' in metrics

        s3_warehouse.unblock()
        recovered = wait_for(lambda: client.get("/readyz").json()["status"] == "ready", timeout=60)
        assert recovered, client.get("/readyz").json()
        assert wait_for(
            lambda: client.get("/readyz").json()["dependencies"]["lake_writer"]["pending_rows"] == 0, timeout=30
        )
        assert old.s("Family") in client.get(f"/fhir/{cold}").text
        assert new.s("Family") in client.get(f"/fhir/{hot}").text  # now from the lake
        assert container.breakers.states()["object_storage"].value == "closed"


def _ops(client: Any, settings: Any) -> dict[str, str]:
    from security.principal import Role
    from tests.fixtures.app import TOKEN_URL
    from tests.fixtures.identity import login, register

    return login(client, register(settings.data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()
