"""Every bucket is SSE-KMS with a bucket key, versioned, private, TLS-only; audit is locked six years; replication."""

from __future__ import annotations

import pytest

from fhirlake.settings import AuditSettings
from tests.terraform.hcl import ROOTS, TERRAFORM, blocks, module_calls, one, resolve_number, variables

BUCKET_MODULE = TERRAFORM / "modules" / "bucket"


def _only(type_: str) -> dict:
    found = [b for b in blocks("resource", type_) if b.path.parent == BUCKET_MODULE]
    assert len(found) == 1, f"{type_}: expected one in modules/bucket, found {len(found)}"
    return found[0].body


def test_every_bucket_is_made_by_the_bucket_module() -> None:
    buckets = list(blocks("resource", "aws_s3_bucket"))
    assert [b.path.parent for b in buckets] == [BUCKET_MODULE]
    for root in ROOTS:
        assert len(module_calls(root, "modules/bucket")) >= 3


def test_bucket_module_encrypts_with_sse_kms_and_a_bucket_key() -> None:
    rule = one(_only("aws_s3_bucket_server_side_encryption_configuration")["rule"])
    default = one(rule["apply_server_side_encryption_by_default"])
    assert default["sse_algorithm"] == "aws:kms"
    assert default["kms_master_key_id"] == "${var.kms_key_arn}"
    assert rule["bucket_key_enabled"] is True
    assert "default" not in variables(BUCKET_MODULE)["kms_key_arn"], "the key must always be given"


def test_bucket_module_versions_and_blocks_public_access() -> None:
    versioning = one(_only("aws_s3_bucket_versioning")["versioning_configuration"])
    assert versioning["status"] == "Enabled"
    block = _only("aws_s3_bucket_public_access_block")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[flag] is True, flag
    ownership = one(_only("aws_s3_bucket_ownership_controls")["rule"])
    assert ownership["object_ownership"] == "BucketOwnerEnforced"  # no ACLs at all


def test_bucket_policy_denies_plain_http_and_old_tls() -> None:
    documents = [b for b in blocks("data", "aws_iam_policy_document") if b.path.parent == BUCKET_MODULE]
    tls = next(d for d in documents if d.name == "tls_only").body["statement"]
    insecure = next(s for s in tls if s["sid"] == "DenyInsecureTransport")
    assert insecure["effect"] == "Deny" and insecure["actions"] == ["s3:*"]
    condition = one(insecure["condition"])
    assert (condition["test"], condition["variable"], condition["values"]) == ("Bool", "aws:SecureTransport", ["false"])
    assert len(insecure["resources"]) == 2  # the bucket and every object
    old = next(s for s in tls if s["sid"] == "DenyOldTls")
    assert one(old["condition"])["variable"] == "s3:TlsVersion"
    policy = _only("aws_s3_bucket_policy")
    assert "tls_only" in str(next(d for d in documents if d.name == "combined").body["source_policy_documents"])
    assert policy["policy"] == "${data.aws_iam_policy_document.combined.json}"


def test_bucket_module_has_lifecycle_rules() -> None:
    rule = one(_only("aws_s3_bucket_lifecycle_configuration")["rule"])
    assert rule["status"] == "Enabled"
    assert one(rule["abort_incomplete_multipart_upload"])["days_after_initiation"] > 0
    assert "noncurrent_version_expiration" in rule and "transition" in rule


def test_object_lock_is_compliance_mode_and_never_shorter_than_six_years() -> None:
    lock = _only("aws_s3_bucket_object_lock_configuration")
    retention = one(one(lock["rule"])["default_retention"])
    assert retention["mode"] == "COMPLIANCE"
    assert retention["days"] == "${var.object_lock_days}"
    validation = one(variables(BUCKET_MODULE)["object_lock_days"]["validation"])
    assert "var.object_lock_days >= 2190" in validation["condition"]


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("bucket", ["audit_bucket", "trail_bucket"])
def test_audit_and_trail_buckets_are_locked_at_least_2190_days(root: str, bucket: str) -> None:
    call = next(c for c in module_calls(root, "modules/bucket") if c.name == bucket)
    days = resolve_number(call.body["object_lock_days"], TERRAFORM / root)
    assert days >= 2190
    assert resolve_number(call.body["noncurrent_version_days"], TERRAFORM / root) > days


def test_primary_replicates_lake_and_audit_buckets_to_the_dr_region() -> None:
    calls = {c.name: c.body for c in module_calls("primary", "modules/bucket")}
    for name in ("lake_bucket", "audit_bucket"):
        destination = calls[name]["replication_destination"]
        assert destination["region"] == "${var.dr_region}"
        assert "dr_" in destination["bucket_arn"] and "dr_" in destination["kms_key_arn"]
    replication = _only("aws_s3_bucket_replication_configuration")
    rule = one(replication["rule"])
    assert rule["status"] == "Enabled"
    assert one(rule["delete_marker_replication"])["status"] == "Enabled"
    criteria = one(rule["source_selection_criteria"])
    assert one(criteria["sse_kms_encrypted_objects"])["status"] == "Enabled"
    destination = one(rule["destination"])
    assert one(destination["encryption_configuration"])["replica_kms_key_id"] == (
        "${var.replication_destination.kms_key_arn}"
    )
    assert one(destination["replication_time"])["status"] == "Enabled"
    assert one(destination["metrics"])["status"] == "Enabled"


def test_dr_audit_bucket_keeps_the_same_lock_and_can_replicate_back() -> None:
    calls = {c.name: c.body for c in module_calls("dr", "modules/bucket")}
    assert "replicate_to_primary" in variables(TERRAFORM / "dr")
    assert "back_to_primary" in str(calls["lake_bucket"]["replication_destination"])
    assert "back_to_primary" in str(calls["audit_bucket"]["replication_destination"])


@pytest.mark.parametrize("root", ROOTS)
def test_terraform_retention_default_is_the_codes_default(root: str) -> None:
    default = variables(TERRAFORM / root)["audit_retention_days"]["default"]
    assert default == AuditSettings().retention_days == 2190
