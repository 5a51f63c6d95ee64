"""The log redaction processor keeps only keys known to be PHI-free."""

from __future__ import annotations

from fhirlake.logs import REDACTED, redact


def test_unknown_keys_are_redacted() -> None:
    event = {"event": "request", "status": 200, "family": "Smith", "mrn": "12345"}
    out = redact(None, "info", event)
    assert out["event"] == "request" and out["status"] == 200
    assert out["family"] == REDACTED and out["mrn"] == REDACTED
