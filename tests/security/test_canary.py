"""Canary PHI in every PHI element: found through the API, never in clear on disk or in logs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirlake.bootstrap import open_catalog
from lake.maintenance import maintain
from tests.fixtures.app import make_settings
from tests.fixtures.canary import Canary
from tests.fixtures.data import synthea_paths
from tests.fixtures.scan import hits

HEADERS = {"Content-Type": "application/fhir+json"}


@pytest.mark.slow
def test_no_canary_in_clear_anywhere_under_the_data_dir_or_in_logs(server_factory: Any) -> None:
    canary = Canary()
    server = server_factory(FHIRLAKE_LOG_LEVEL="debug", FHIRLAKE_LAKE__COMMIT_INTERVAL_S="0.3")
    server.start()
    with httpx.Client(timeout=30, headers={**HEADERS, **server.headers()}) as http:
        reply = http.post(server.base, content=canary.bundle_bytes())
        assert reply.status_code == 200, reply.text
        patient_id = reply.json()["entry"][0]["response"]["location"].split("/")[1]
        assert http.post(server.base, content=synthea_paths()[0].read_bytes()).status_code == 200
        # A second version of everything, and reads and searches that carry the canaries on the wire.
        assert http.post(server.base, content=canary.bundle_bytes(patient_id)).status_code == 200
        read = http.get(f"{server.base}/Patient/{patient_id}")
        assert canary.s("Family") in read.text and canary.birth_date in read.text
        found = http.get(
            f"{server.base}/Patient", params={"family": canary.s("Family"), "birthdate": canary.birth_date}
        )
        assert found.json()["total"] == 1
        assert http.get(f"{server.base}/Patient", params={"phone": canary.s("Phone")}).json()["total"] == 1
        assert http.get(f"{server.base}/Patient", params={"identifier": canary.s("Ssn")}).json()["total"] == 1
    server.stop()  # drains the journal into the lake
    maintain(open_catalog(make_settings(server.data_dir)), snapshot_retention_s=3600, min_files=2, target_rows=10**6)

    logs = {"server log": server.log_path.read_bytes()}
    assert b'"event": "request"' in logs["server log"]
    clear = hits(server.data_dir, [canary.clear_code], logs)
    assert any("(decoded)" in where for where in clear), "the scan must see decoded lake values"
    assert any(where.startswith("journal") for where in clear)
    assert hits(server.data_dir, canary.phi_values(), logs) == {}
