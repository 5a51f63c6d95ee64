"""Assertions shared by the gateway tests: OperationOutcomes and "nothing was written"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi.testclient import TestClient

from fhirlake.settings import LimitSettings
from lake.schema import all_tables
from tests.fixtures.app import container_of, flush_lake, make_settings, open_client


def canary() -> str:
    """A unique marker seeded into rejected input; it must never come back in a response."""
    return f"CANARY-PHI-{uuid.uuid4().hex}"


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def transaction(*entries: dict[str, Any], bundle_type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


def put_entry(resource: dict[str, Any], url: str, full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "PUT", "url": url}}
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Jane"]}], **fields}


def observation(**fields: Any) -> dict[str, Any]:
    doc = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    return {**doc, **fields}


def rejected(response: httpx.Response, status: int, code: str, expression: str | None = None) -> dict[str, Any]:
    """Assert an error response: status, an OperationOutcome, and an issue with ``code`` at ``expression``.

    Returns the matching issue.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    doc = response.json()
    assert doc["resourceType"] == "OperationOutcome", doc
    return _issue(doc, code, expression)


def entry_outcome(entry: dict[str, Any], status: int, code: str, expression: str | None = None) -> dict[str, Any]:
    """Assert a batch-response entry failed with ``status`` and an issue with ``code`` at ``expression``."""
    assert entry["response"]["status"].split()[0] == str(status), entry
    return _issue(entry["response"]["outcome"], code, expression)


def _issue(doc: dict[str, Any], code: str, expression: str | None) -> dict[str, Any]:
    for issue in doc["issue"]:
        assert issue["severity"] in ("fatal", "error", "warning", "information")
        if issue["code"] == code and (expression is None or expression in issue.get("expression", [])):
            return dict(issue)
    raise AssertionError(f"no issue with code {code} at {expression}: {doc}")


def versions_count(client: TestClient) -> int:
    row = container_of(client).journal.reader().execute("SELECT COUNT(*) FROM versions").fetchone()
    return int(row[0])


def lake_rows(client: TestClient) -> dict[str, int]:
    """Rows per lake table after writing everything accepted so far."""
    flush_lake(client)
    reader = container_of(client).lake_reader
    return {table: reader.scan(table, ("id",)).num_rows for table in all_tables()}


def assert_nothing_written(client: TestClient) -> None:
    assert versions_count(client) == 0
    journal = container_of(client).journal.reader()
    assert journal.execute("SELECT COUNT(*) FROM current").fetchone()[0] == 0
    assert journal.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] == 0
    assert sum(lake_rows(client).values()) == 0


@contextmanager
def limited_client(tmp_path: Path, **limits: Any) -> Iterator[TestClient]:
    """A gateway on a fresh data dir with lowered request limits."""
    settings = make_settings(tmp_path / "limited")
    settings = settings.model_copy(update={"limits": LimitSettings(**limits)})
    with open_client(settings) as client:
        yield client
