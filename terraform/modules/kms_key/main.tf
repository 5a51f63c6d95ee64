# One customer-managed KMS key: a multi-region primary with yearly rotation, or (with
# replica_of set) its replica in another region. Replicas share the primary's key material
# and rotation schedule, so data sealed in one region opens in the other.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"

  # Every administrative action spelled out (no kms wildcard), and no use of the key for data.
  admin_actions = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ReplicateKey",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
    "kms:UpdatePrimaryRegion",
  ]

  use_actions = [
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
  ]
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_111:A key policy applies to its own key only: "*" as resource means this key, and every statement names its principals
  #checkov:skip=CKV_AWS_356:A key policy applies to its own key only: "*" as resource means this key, and every statement names its principals
  statement {
    sid       = "KeyAdministration"
    effect    = "Allow"
    actions   = local.admin_actions
    resources = ["*"] # in a key policy "*" means this key
    principals {
      type        = "AWS"
      identifiers = length(var.admin_role_arns) > 0 ? var.admin_role_arns : [local.account_root]
    }
  }

  dynamic "statement" {
    for_each = length(var.user_role_arns) > 0 ? [1] : []
    content {
      sid       = "UseForDataKeys"
      effect    = "Allow"
      actions   = local.use_actions
      resources = ["*"]
      principals {
        type        = "AWS"
        identifiers = var.user_role_arns
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.service_principals) > 0 ? [1] : []
    content {
      sid       = "UseByAwsServices"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext"]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = var.service_principals
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [data.aws_caller_identity.current.account_id]
      }
    }
  }

  dynamic "statement" {
    for_each = var.logs_region == null ? [] : [1]
    content {
      sid       = "UseByCloudWatchLogsOfThisAccount"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = ["logs.${var.logs_region}.amazonaws.com"]
      }
      condition {
        test     = "ArnLike"
        variable = "kms:EncryptionContext:aws:logs:arn"
        values   = ["arn:${data.aws_partition.current.partition}:logs:${var.logs_region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.via_services) > 0 ? [1] : []
    content {
      sid       = "UseThroughAwsServicesInThisAccount"
      effect    = "Allow"
      actions   = ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
      resources = ["*"]
      principals {
        type        = "AWS"
        identifiers = concat(length(var.admin_role_arns) > 0 ? var.admin_role_arns : [local.account_root], var.user_role_arns)
      }
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = var.via_services
      }
      condition {
        test     = "StringEquals"
        variable = "kms:CallerAccount"
        values   = [data.aws_caller_identity.current.account_id]
      }
    }
  }
}

resource "aws_kms_key" "this" {
  count = var.replica_of == null ? 1 : 0

  description             = var.description
  multi_region            = true
  enable_key_rotation     = true
  rotation_period_in_days = var.rotation_period_in_days
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_replica_key" "this" {
  count = var.replica_of == null ? 0 : 1

  description             = var.description
  primary_key_arn         = var.replica_of
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  for_each = toset(var.aliases)

  name          = each.value
  target_key_id = local.key_id
}

locals {
  key_id  = var.replica_of == null ? aws_kms_key.this[0].key_id : aws_kms_replica_key.this[0].key_id
  key_arn = var.replica_of == null ? aws_kms_key.this[0].arn : aws_kms_replica_key.this[0].arn
}
