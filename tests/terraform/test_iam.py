"""No IAM policy statement allows wildcard actions on data services; service principals are scoped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.terraform.hcl import TERRAFORM, Block, blocks

DATA_SERVICES = ("s3", "kms", "secretsmanager", "rds", "rds-db", "rds-data", "elasticfilesystem", "glue", "dynamodb")


def _statements() -> Iterator[tuple[Block, dict[str, Any]]]:
    for document in blocks("data", "aws_iam_policy_document"):
        for statement in document.body.get("statement", []):
            yield document, statement


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("actions", [])
    return [actions] if isinstance(actions, str) else list(actions)


def test_policies_are_policy_documents_not_inline_json() -> None:
    assert list(_statements())
    for path in TERRAFORM.rglob("*.tf"):
        text = path.read_text()
        assert '"Action"' not in text and "jsonencode({\n    Version" not in text, f"{path}: inline policy JSON"


def test_no_allow_statement_has_a_wildcard_action_on_a_data_service() -> None:
    checked = 0
    for document, statement in _statements():
        if statement.get("effect", "Allow") == "Deny":
            continue  # a Deny may be broad: the TLS-only bucket policy denies s3:* over plain HTTP
        for action in _actions(statement):
            if action.startswith("${local."):
                continue  # resolved below
            assert action != "*", f"{document.where}: action *"
            service, _, verb = action.partition(":")
            if service in DATA_SERVICES:
                assert "*" not in verb, f"{document.where}: {action}"
            checked += 1
    assert checked > 30


def test_actions_lists_in_locals_have_no_wildcards() -> None:
    text = (TERRAFORM / "modules" / "kms_key" / "main.tf").read_text()
    for name in ("admin_actions", "use_actions"):
        body = text.split(f"{name} = [", 1)[1].split("]", 1)[0]
        assert "*" not in body, name


def test_task_roles_touch_only_this_deployments_buckets_and_keys() -> None:
    iam = [d for d in blocks("data", "aws_iam_policy_document") if d.path.parent.name == "iam"]
    for document in iam:
        if document.name.endswith("_trust"):
            continue
        for statement in document.body["statement"]:
            resources = statement.get("resources", [])
            if resources == ["*"]:
                # Only ECR's token call has no resource-level permission.
                assert _actions(statement) == ["ecr:GetAuthorizationToken"], f"{document.where}: {statement}"
            for resource in resources:
                assert "arn:aws:s3:::*" not in resource and resource != "arn:aws:kms:*", resource


def test_service_principals_on_key_policies_are_bound_to_this_account() -> None:
    document = next(
        b for b in blocks("data", "aws_iam_policy_document") if b.path.parent.name == "kms_key" and b.name == "key"
    )
    dynamics = document.body.get("dynamic", [])
    assert len(dynamics) == 4
    for dynamic in dynamics:
        content = dynamic["statement"]["content"][0]
        principal = content["principals"][0]
        conditions = {c["variable"] for c in content.get("condition", [])}
        if principal["type"] == "Service":
            # CloudWatch Logs: only for log groups of this account; other services: on its behalf only.
            assert conditions & {"aws:SourceAccount", "kms:EncryptionContext:aws:logs:arn"}, content["sid"]
        if content["sid"] == "UseThroughAwsServicesInThisAccount":
            assert {"kms:ViaService", "kms:CallerAccount"} <= conditions
