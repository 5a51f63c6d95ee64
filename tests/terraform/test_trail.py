"""CloudTrail records S3 object access on the PHI buckets and every KMS call, validated and encrypted."""

from __future__ import annotations

import pytest

from tests.terraform.hcl import ROOTS, blocks, module_calls


def _trail() -> dict:
    trails = list(blocks("resource", "aws_cloudtrail"))
    assert len(trails) == 1
    return trails[0].body


def test_trail_is_multi_region_validated_and_encrypted() -> None:
    trail = _trail()
    assert trail["is_multi_region_trail"] is True
    assert trail["enable_log_file_validation"] is True
    assert trail["include_global_service_events"] is True
    assert trail["kms_key_id"] == "${var.kms_key_arn}"
    assert trail["cloud_watch_logs_group_arn"]  # metric filters and alarms read it


def test_management_events_include_kms_calls() -> None:
    # KMS Decrypt / GenerateDataKey / ReEncrypt are management events in CloudTrail (KMS has no
    # data-event category): the management selector must not exclude kms.amazonaws.com.
    selectors = _trail()["advanced_event_selector"]
    management = [s for s in selectors if s["field_selector"][0]["equals"] == ["Management"]]
    assert len(management) == 1
    fields = management[0]["field_selector"]
    assert [f["field"] for f in fields] == ["eventCategory"], "no filter may drop KMS (or read-only) events"
    assert "exclude_management_event_sources" not in str(_trail())


def test_s3_object_data_events_on_the_data_buckets() -> None:
    selectors = _trail()["advanced_event_selector"]
    data = [s for s in selectors if s["field_selector"][0]["equals"] == ["Data"]]
    assert len(data) == 1
    fields = {f["field"]: f for f in data[0]["field_selector"]}
    assert fields["resources.type"]["equals"] == ["AWS::S3::Object"]
    assert "var.data_bucket_arns" in str(fields["resources.ARN"]["starts_with"])
    assert "read_only" not in fields  # reads and writes both


@pytest.mark.parametrize("root", ROOTS)
def test_each_root_records_its_lake_and_audit_buckets(root: str) -> None:
    (call,) = module_calls(root, "modules/trail")
    arns = call.body["data_bucket_arns"]
    assert "${module.lake_bucket.arn}" in arns and "${module.audit_bucket.arn}" in arns
