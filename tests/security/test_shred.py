"""Erasure by crypto-shredding: the patient is unreadable everywhere, including time travel; others are not."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lake.schema import all_tables
from security.errors import KeyShreddedError
from security.principal import Role
from tests.fixtures.app import TOKEN_URL, container_of, flush_lake
from tests.fixtures.canary import Canary
from tests.fixtures.identity import login, register
from tests.fixtures.scan import hits


def _ops(client: TestClient) -> dict[str, str]:
    """An operator allowed to erase patients (no clinical data)."""
    data_dir = container_of(client).settings.data_dir
    return login(client, register(data_dir, Role.OPS, "system/Patient.d"), TOKEN_URL).headers()


def _post(client: TestClient, body: bytes) -> list[str]:
    reply = client.post("/fhir", content=body)
    assert reply.status_code == 200, reply.text
    return [e["response"]["location"].split("/_history")[0] for e in reply.json()["entry"]]


def _open_everything(client: TestClient) -> tuple[bytes, int]:
    """Every sealed body in every snapshot of every table and in the journal, opened with the live keys."""
    container = container_of(client)
    sealer = container.reads._sealer  # the server's own sealer: what an attacker with the data dir gets at best
    opened, shredded = [], 0

    def attempt(rtype: str, rid: str, version: int, sealed: bytes) -> None:
        nonlocal shredded
        try:
            opened.append(sealer.open(rtype, rid, version, "resource", sealed))
        except KeyShreddedError:
            shredded += 1

    for name in all_tables():
        table = container.catalog.table(name, fresh=True)
        for snapshot in table.snapshots():
            data = table.scan(
                snapshot_id=snapshot.snapshot_id, selected_fields=("resource_type", "id", "version", "resource")
            ).to_arrow()
            for rtype, rid, version, body in zip(*(c.to_pylist() for c in data.columns), strict=True):
                if body is not None:
                    attempt(rtype, rid, version, body)
    rows = container.journal.reader().execute("SELECT rtype, id, version, body FROM versions WHERE body IS NOT NULL")
    for rtype, rid, version, body in rows:
        attempt(rtype, rid, version, bytes(body))
    return b"\n".join(opened), shredded


def test_shredded_patient_is_gone_from_current_and_time_travel_reads(client: TestClient, tmp_path: Path) -> None:
    gone, kept = Canary(), Canary()
    gone_refs = _post(client, gone.bundle_bytes())
    kept_refs = _post(client, kept.bundle_bytes())
    flush_lake(client)
    gone_patient = gone_refs[0].split("/")[1]
    _post(client, gone.bundle_bytes(gone_patient))  # a second version, in a second snapshot
    flush_lake(client)
    before, _ = _open_everything(client)
    assert gone.s("Family").encode() in before and kept.s("Family").encode() in before

    assert client.post(f"/fhir/Patient/{gone_patient}/$purge").status_code == 403  # an EMR feed may not erase
    reply = client.post(f"/fhir/Patient/{gone_patient}/$purge", headers=_ops(client))
    assert reply.status_code == 200, reply.text
    assert gone.s("Family") not in reply.text

    practitioner = gone_refs.pop()  # not the patient's record: it stays
    assert client.get(f"/fhir/{practitioner}").status_code == 200
    for ref in gone_refs:
        status = client.get(f"/fhir/{ref}")
        assert status.status_code == 410, ref
        assert status.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{gone_patient}/_history/1").status_code == 410
    assert client.get("/fhir/Patient", params={"family": gone.s("Family")}).json()["total"] == 0
    assert client.get("/fhir/Observation", params={"patient": gone_patient}).json()["total"] == 0
    assert client.post("/fhir", content=gone.bundle_bytes(gone_patient)).status_code == 410  # no new data for them
    for ref in kept_refs:
        assert client.get(f"/fhir/{ref}").status_code == 200, ref
    assert kept.s("Family") in client.get(f"/fhir/{kept_refs[0]}").text

    after, shredded = _open_everything(client)
    assert shredded >= 2 * len(gone_refs)  # both versions, journal and lake
    patient_phi = [v for v in gone.phi_values() if v != gone.s("Practitioner")]
    assert [v for v in patient_phi if v.encode() in after] == []
    assert all(v.encode() in after for v in (kept.s("Family"), kept.s("Note"), kept.birth_date))
    data_dir = container_of(client).settings.data_dir
    assert hits(data_dir, gone.phi_values() + kept.phi_values()) == {}


def test_purge_of_an_unknown_patient_is_404(client: TestClient) -> None:
    reply = client.post("/fhir/Patient/nobody/$purge", headers=_ops(client))
    assert reply.status_code == 404
    assert reply.json()["resourceType"] == "OperationOutcome"


@pytest.mark.slow
def test_cli_shred_reaches_a_running_server_and_key_store_backups(server_factory: object, tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    import httpx

    server = server_factory()  # type: ignore[operator]
    server.start()
    canary = Canary()
    with httpx.Client(timeout=30, headers={"Content-Type": "application/fhir+json", **server.headers()}) as http:
        reply = http.post(server.base, content=canary.bundle_bytes())
        patient = reply.json()["entry"][0]["response"]["location"].split("/")[1]
        assert http.get(f"{server.base}/Patient/{patient}").status_code == 200  # cached in the server now
        cli = [sys.executable, "-m", "fhirlake.cli", "keys"]
        backup = tmp_path / "offsite" / "keystore.db"
        subprocess.run(
            [*cli, "backup", "--to", str(backup), "--data-dir", str(server.data_dir)], check=True, env=server.env
        )
        done = subprocess.run(
            [*cli, "shred", "--patient", patient, "--data-dir", str(server.data_dir)],
            check=True,
            env=server.env,
            capture_output=True,
            text=True,
        )
        assert str(backup.resolve()) in done.stdout
        time.sleep(1.2)  # the server drops cached keys within a second of a shred elsewhere
        assert http.get(f"{server.base}/Patient/{patient}").status_code == 410
    assert b"Cnry" not in backup.read_bytes()
    import sqlite3

    assert (
        sqlite3.connect(backup).execute("SELECT COUNT(*) FROM data_keys WHERE subject LIKE 'patient:%'").fetchone()[0]
        == 0
    )
