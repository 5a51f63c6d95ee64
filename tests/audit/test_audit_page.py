"""The compliance officer's audit page in a real headless Chromium: it loads, draws real data, filters."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from security.labels import CONFIDENTIALITY
from security.principal import Role
from tests.fixtures.identity import login, register


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return found


def _render(browser: str, url: str) -> str:
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-gpu",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _attr(dom: str, element_id: str, name: str) -> str:
    match = re.search(rf'<svg[^>]*id="{element_id}"[^>]*>', dom)
    assert match is not None, element_id
    value = re.search(rf'{name}="([^"]*)"', match.group(0))
    assert value is not None, (element_id, name)
    return value.group(1)


@pytest.mark.slow
def test_audit_page_draws_real_data_and_filters(server_factory: Any) -> None:
    browser = _chromium()
    server = server_factory()
    server.start()
    emr = server.headers()
    fhir = {"Content-Type": "application/fhir+json"}
    with httpx.Client(timeout=30) as http:
        created = http.post(
            f"{server.base}/Patient", content=orjson.dumps({"resourceType": "Patient"}), headers=emr | fhir
        )
        for _ in range(3):
            assert http.get(f"{server.base}/Patient/{created.json()['id']}", headers=emr).status_code == 200
        restricted = {"resourceType": "Patient", "meta": {"security": [{"system": CONFIDENTIALITY, "code": "R"}]}}
        sensitive = http.post(f"{server.base}/Patient", content=orjson.dumps(restricted), headers=emr | fhir)
        assert http.get(f"{server.base}/Patient/{sensitive.json()['id']}", headers=emr).status_code == 200
        assert http.get(f"{server.base}/Patient").status_code == 401  # a denial to chart
        officer = login(
            http, register(server.data_dir, Role.COMPLIANCE_OFFICER, "system/*.rs"), f"{server.origin}/auth/token"
        )
        emr_client = next(c for c in (server.data_dir / "client-certs").iterdir()).name

    page = f"{server.origin}/admin/audit#token={quote(officer.token)}"
    dom = _render(browser, page)
    assert 'data-state="loaded"' in dom
    everything = int(_attr(dom, "over-time", "data-total"))
    assert everything >= 8  # token requests, the writes and reads, the denial
    assert int(_attr(dom, "denials", "data-total")) >= 1
    assert f'data-label="{emr_client}"' in dom  # the top-agents chart names the integration
    row = re.search(r'<tr data-kind="sensitive-access">(.*?)</tr>', dom)
    assert row is not None and f"<td>{emr_client}</td>" in row.group(1) and "<td>codes R=1</td>" in row.group(1)

    filtered = _render(browser, f"{page}&agent={quote(emr_client)}")
    only_emr = int(_attr(filtered, "over-time", "data-total"))
    assert 0 < only_emr < everything
    assert 'value="' + emr_client in filtered  # the filter form shows the active filter

    refused = _render(browser, f"{server.origin}/admin/audit#token=not-a-token")
    assert 'data-state="denied"' in refused and 'data-bars="' not in refused
