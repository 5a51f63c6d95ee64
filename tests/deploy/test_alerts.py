"""The Prometheus rules only use series the code exports, parse as PromQL, and every alert leads
to a runbook section and to its entry in the alerts guide."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy.manifests import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RUNBOOKS = ROOT / "docs" / "operations" / "runbooks.md"
ALERTS_DOC = ROOT / "docs" / "operations" / "alerts.md"
RUNBOOK_PATH = "docs/operations/runbooks.md"

SOURCES = ["telemetry/metrics.py", "fhirlake/metrics.py", "dr/lag.py", "audit/*.py", "resilience/*.py", "lake/*.py"]

# What prometheus_client exposes for an instrument of each type, by suffix.
EXPOSED_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("_sum", "_count", "_created"),
    "Gauge": ("",),
}
INSTRUMENT = re.compile(r"\b(Counter|Histogram|Summary|Gauge)\(\s*[\"'](fhirlake_[a-z0-9_]+)[\"']")
QUOTED_NAME = re.compile(r"[\"'](fhirlake_[a-z0-9_]+)")
TYPE_LINE = re.compile(r"# TYPE (fhirlake_[a-z0-9_]+) (counter|gauge|histogram|summary)")
SERIES = re.compile(r"\bfhirlake_[a-z0-9_]+")
RECORDED = re.compile(r"\bfhirlake:[a-z0-9_:]+")


def source_files() -> list[Path]:
    return sorted(path for pattern in SOURCES for path in ROOT.glob(pattern))


def exported_series() -> set[str]:
    """Series names the code puts on /metrics: instruments with their suffixes, the rest verbatim."""
    names: set[str] = set()
    for path in source_files():
        text = path.read_text()
        instruments = dict((name, kind) for kind, name in INSTRUMENT.findall(text))
        for name, kind in instruments.items():
            names |= {name + suffix for suffix in EXPOSED_SUFFIXES[kind]}
        names |= {name for name, _kind in TYPE_LINE.findall(text)}
        names |= {name for name in QUOTED_NAME.findall(text) if name not in instruments}
    return names


def rule_file() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return doc


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_file()["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lowercase, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in heading.strip().lower() if c not in set(string.punctuation) - {"-", "_"})
    return kept.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {slug(line[3:]) for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}


def test_the_source_scan_finds_instruments_with_their_exposed_suffixes() -> None:
    exported = exported_series()
    assert {"fhirlake_http_requests_total", "fhirlake_kms_errors_total"} <= exported
    assert "fhirlake_http_requests" not in exported  # a counter is only ever exposed with _total
    assert {"fhirlake_http_request_duration_seconds_bucket", "fhirlake_http_request_duration_seconds_count"} <= exported
    assert {"fhirlake_ready", "fhirlake_circuit_breaker_state", "fhirlake_lake_pending_seconds"} <= exported
    assert {"fhirlake_dr_seconds_behind", "fhirlake_dr_available"} <= exported


def test_every_group_has_rules_with_unique_names() -> None:
    groups = rule_file()["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    named = [rule.get("alert") or rule["record"] for rule in rules()]
    assert len(set(named)) == len(named)


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule.get("alert") or rule["record"])
def test_every_expression_is_promql(rule: dict[str, Any]) -> None:
    promql_parser.parse(rule["expr"])


def test_the_promql_check_rejects_a_broken_expression() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(fhirlake_http_requests_total[5m])")


def test_every_series_in_an_expression_is_exported_by_the_code() -> None:
    exported = exported_series()
    used = {name for rule in rules() for name in SERIES.findall(rule["expr"])}
    assert not used - exported


def test_every_recorded_series_an_alert_uses_is_recorded_here() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {name for rule in alerts() for name in RECORDED.findall(rule["expr"])}
    assert used
    assert used <= recorded


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: alert["alert"])
def test_every_alert_has_a_severity_a_summary_and_a_runbook_section(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"page", "ticket"}
    assert alert["annotations"]["summary"]
    path, _, anchor = alert["annotations"]["runbook_url"].partition("#")
    assert path == RUNBOOK_PATH
    assert anchor == alert["alert"].lower()
    assert anchor in runbook_anchors()


def test_the_slug_follows_github() -> None:
    assert slug("FhirlakeKmsErrors") == "fhirlakekmserrors"
    assert slug("Lake freshness (60 s)") == "lake-freshness-60-s"


def test_every_alert_the_guide_names_exists_and_every_alert_is_in_the_guide() -> None:
    defined = {alert["alert"] for alert in alerts()}
    named = set(re.findall(r"`(Fhirlake[A-Za-z]+)`", ALERTS_DOC.read_text()))
    assert named == defined
