"""Alarms for replication lag, error rate and audit-sink failures — on events the code really logs."""

from __future__ import annotations

import re

from tests.terraform.hcl import ROOT, TERRAFORM, blocks, module_calls, variables

ALARMS = TERRAFORM / "modules" / "alarms"


def _alarm(name: str) -> dict:
    return next(b.body for b in blocks("resource", "aws_cloudwatch_metric_alarm") if b.name == name)


def test_replication_lag_alarm_watches_rtc_latency_against_the_rpo() -> None:
    alarm = _alarm("replication_lag")
    assert (alarm["namespace"], alarm["metric_name"]) == ("AWS/S3", "ReplicationLatency")
    assert alarm["threshold"] == "${var.rpo_seconds}"
    assert variables(ALARMS)["rpo_seconds"]["default"] == 60
    assert set(alarm["dimensions"]) == {"SourceBucket", "DestinationBucket", "RuleId"}
    rules = next(c for c in module_calls("primary", "modules/alarms")).body["replication_rules"]
    assert set(rules) == {"lake", "audit"}
    # The rule id the alarm watches is the one the bucket module writes.
    assert 'id       = "to-${var.replication_destination.region}"' in (TERRAFORM / "modules/bucket/main.tf").read_text()
    assert all(r["rule_id"] == "to-${var.dr_region}" for r in rules.values())


def test_error_rate_alarm_is_a_percentage_of_requests() -> None:
    alarm = _alarm("error_rate")
    queries = {q["id"]: q for q in alarm["metric_query"]}
    assert "requests" in queries["rate"]["expression"] and queries["rate"]["return_data"] is True
    assert queries["errors"]["metric"][0]["metric_name"] == "HTTPCode_Target_5XX_Count"
    assert alarm["threshold"] == "${var.error_rate_percent}"


def test_audit_sink_alarm_counts_events_the_code_logs() -> None:
    metric_filter = next(b.body for b in blocks("resource", "aws_cloudwatch_log_metric_filter") if "audit" in b.name)
    events = re.findall(r'\$\.event = \\?"([\w.]+)\\?"', metric_filter["pattern"])
    assert "audit_unavailable" in events  # gateway/audit.py: no record, no answer (503)
    sources = "\n".join(p.read_text() for p in (ROOT / "audit").glob("*.py")) + (ROOT / "gateway/audit.py").read_text()
    for event in events:
        assert re.search(rf'log\.(error|warning)\(\s*"{re.escape(event)}"', sources), f"{event} is never logged"
    alarm = _alarm("audit_sink_failures")
    assert alarm["metric_name"] == metric_filter["metric_transformation"][0]["name"]
    assert alarm["threshold"] == 0


def test_every_alarm_notifies_the_encrypted_topic() -> None:
    topic = next(b.body for b in blocks("resource", "aws_sns_topic") if b.path.parent == ALARMS)
    assert topic["kms_master_key_id"] == "${var.kms_key_arn}"
    for alarm in blocks("resource", "aws_cloudwatch_metric_alarm"):
        assert alarm.body["alarm_actions"] == ["${aws_sns_topic.alarms.arn}"], alarm.where
