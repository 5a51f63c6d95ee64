"""Every KMS key rotates and is multi-region; replicas follow a primary; key policies are least privilege."""

from __future__ import annotations

import pytest

from security.config import KmsSettings
from tests.terraform.hcl import ROOTS, TERRAFORM, blocks, module_calls, variables

KMS_MODULE = TERRAFORM / "modules" / "kms_key"


def test_every_kms_key_rotates_and_is_multi_region() -> None:
    keys = list(blocks("resource", "aws_kms_key"))
    assert keys, "no KMS key"
    for key in keys:
        assert key.body["enable_key_rotation"] is True, key.where
        assert key.body["multi_region"] is True, key.where
        assert key.body["deletion_window_in_days"] >= 7, key.where
        assert key.body["policy"].startswith("${data.aws_iam_policy_document."), key.where


def test_rotation_period_is_at_most_a_year() -> None:
    period = variables(KMS_MODULE)["rotation_period_in_days"]
    assert period["default"] <= 365
    assert "<= 365" in period["validation"][0]["condition"]


def test_replica_keys_replicate_a_primary_and_carry_a_policy() -> None:
    replicas = list(blocks("resource", "aws_kms_replica_key"))
    assert replicas
    for replica in replicas:
        assert replica.body["primary_key_arn"] == "${var.replica_of}", replica.where
        assert "policy" in replica.body


def test_every_dr_key_is_a_replica_of_a_primary_region_key() -> None:
    calls = module_calls("dr", "modules/kms_key")
    assert {c.name for c in calls} == {"data_key", "audit_key", "tenant_key"}
    for call in calls:
        assert str(call.body["replica_of"]).startswith(("${var.primary_", "${each.value")), call.where
    assert not any("replica_of" in c.body for c in module_calls("primary", "modules/kms_key"))


@pytest.mark.parametrize("root", ROOTS)
def test_tenant_kek_aliases_are_what_the_aws_kms_provider_looks_up(root: str) -> None:
    tenant = next(c for c in module_calls(root, "modules/kms_key") if c.name == "tenant_key")
    assert tenant.body["aliases"] == ["${var.kms_alias_prefix}-${each.key}"] or tenant.body["aliases"] == [
        "${var.kms_alias_prefix}-${each.value}"
    ]
    # security/kms_aws.py: the tenant's KEK is the key behind f"{aws_alias_prefix}-{tenant}".
    assert variables(TERRAFORM / root)["kms_alias_prefix"]["default"] == KmsSettings().aws_alias_prefix


def test_key_policy_never_grants_kms_star_and_admins_cannot_use_the_key() -> None:
    document = next(b for b in blocks("data", "aws_iam_policy_document") if b.path.parent == KMS_MODULE)
    text = (KMS_MODULE / "main.tf").read_text()
    assert '"kms:*"' not in text
    admin = next(s for s in document.body["statement"] if s.get("sid") == "KeyAdministration")
    assert admin["actions"] == "${local.admin_actions}"
    admin_actions = text.split("admin_actions = [", 1)[1].split("]", 1)[0]
    for use in ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncrypt"):
        assert f'"{use}' not in admin_actions, f"administrators must not be able to {use}"
    assert "*" not in admin_actions
