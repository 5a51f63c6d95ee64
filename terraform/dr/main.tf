# fhirlake, disaster-recovery region: replica keys, replication destination buckets (lake and
# audit, the audit one with the same COMPLIANCE Object Lock), and a standby stack — network,
# database, compute scaled to zero — that a failover scales up. Apply order: see README.md.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name    = "${var.name}-dr"
  account = data.aws_caller_identity.current.account_id
  p       = data.aws_partition.current.partition

  lake_bucket  = "${var.bucket_prefix}-lake-${var.region}"
  audit_bucket = "${var.bucket_prefix}-audit-${var.region}"
  trail_bucket = "${var.bucket_prefix}-trail-${var.region}"
  ca_bucket    = "${var.bucket_prefix}-config-${var.region}"

  primary_lake_bucket_arn  = "arn:${local.p}:s3:::${var.bucket_prefix}-lake-${var.primary_region}"
  primary_audit_bucket_arn = "arn:${local.p}:s3:::${var.bucket_prefix}-audit-${var.primary_region}"

  task_roles = [module.iam.gateway_role_arn, module.iam.writer_role_arn]

  # Failback: once this region serves, replicate back to the primary region's buckets.
  back_to_primary = var.replicate_to_primary
}

# --- replica keys: same key material and key ids as the primary region's keys ---------------------

module "data_key" {
  source = "../modules/kms_key"

  description     = "fhirlake ${local.name}: replica of the data key"
  replica_of      = var.primary_data_key_arn
  aliases         = ["alias/${var.name}-data"]
  admin_role_arns = var.key_admin_role_arns
  user_role_arns  = concat(local.task_roles, [var.primary_replication_role_arn, module.iam.replication_role_arn, module.iam.execution_role_arn])
  via_services = [
    "rds.${var.region}.amazonaws.com",
    "elasticfilesystem.${var.region}.amazonaws.com",
    "secretsmanager.${var.region}.amazonaws.com",
    "s3.${var.region}.amazonaws.com",
  ]
}

module "audit_key" {
  source = "../modules/kms_key"

  description        = "fhirlake ${local.name}: replica of the audit key"
  replica_of         = var.primary_audit_key_arn
  aliases            = ["alias/${var.name}-audit"]
  admin_role_arns    = var.key_admin_role_arns
  user_role_arns     = concat(local.task_roles, [var.primary_replication_role_arn, module.iam.replication_role_arn])
  service_principals = ["cloudtrail.amazonaws.com", "cloudwatch.amazonaws.com"]
  logs_region        = var.region
  via_services       = ["s3.${var.region}.amazonaws.com", "sns.${var.region}.amazonaws.com"]
}

module "tenant_key" {
  source   = "../modules/kms_key"
  for_each = var.primary_tenant_key_arns

  description     = "fhirlake KEK of tenant ${each.key} (replica)"
  replica_of      = each.value
  aliases         = ["${var.kms_alias_prefix}-${each.key}"]
  admin_role_arns = var.key_admin_role_arns
  user_role_arns  = local.task_roles
}

# --- buckets: destinations of the primary region's replication -----------------------------------

module "lake_bucket" {
  source = "../modules/bucket"

  name        = local.lake_bucket
  kms_key_arn = module.data_key.key_arn
  replication_destination = local.back_to_primary ? {
    bucket_arn  = local.primary_lake_bucket_arn
    region      = var.primary_region
    kms_key_arn = var.primary_data_key_arn
    role_arn    = module.iam.replication_role_arn
  } : null
  noncurrent_version_days = var.lake_noncurrent_version_days
}

module "audit_bucket" {
  source = "../modules/bucket"

  name             = local.audit_bucket
  kms_key_arn      = module.audit_key.key_arn
  object_lock_days = var.audit_retention_days
  replication_destination = local.back_to_primary ? {
    bucket_arn  = local.primary_audit_bucket_arn
    region      = var.primary_region
    kms_key_arn = var.primary_audit_key_arn
    role_arn    = module.iam.replication_role_arn
  } : null
  transition_to_ia_days   = 30
  noncurrent_version_days = var.audit_retention_days + 1
}

module "config_bucket" {
  source = "../modules/bucket"

  name        = local.ca_bucket
  kms_key_arn = module.data_key.key_arn
}

resource "aws_s3_object" "client_ca" {
  bucket       = module.config_bucket.name
  key          = "trust-store/emr-client-ca.pem"
  source       = var.client_ca_bundle_file
  source_hash  = filemd5(var.client_ca_bundle_file)
  content_type = "application/x-pem-file"
  kms_key_id   = module.data_key.key_arn
}

# A second multi-region trail, delivered here: the account's activity record (every KMS call,
# every management event) survives the loss of the primary region and its trail bucket, and
# S3 data events on the DR buckets are recorded too.
data "aws_iam_policy_document" "trail_delivery" {
  statement {
    sid       = "CloudTrailAclCheck"
    actions   = ["s3:GetBucketAcl"]
    resources = ["arn:${local.p}:s3:::${local.trail_bucket}"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = ["arn:${local.p}:cloudtrail:${var.region}:${local.account}:trail/${local.name}"]
    }
  }

  statement {
    sid       = "CloudTrailWrite"
    actions   = ["s3:PutObject"]
    resources = ["arn:${local.p}:s3:::${local.trail_bucket}/cloudtrail/AWSLogs/${local.account}/*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = ["arn:${local.p}:cloudtrail:${var.region}:${local.account}:trail/${local.name}"]
    }
  }
}

module "trail_bucket" {
  source = "../modules/bucket"

  name                    = local.trail_bucket
  kms_key_arn             = module.audit_key.key_arn
  object_lock_days        = var.audit_retention_days
  extra_policy_json       = data.aws_iam_policy_document.trail_delivery.json
  transition_to_ia_days   = 30
  noncurrent_version_days = var.audit_retention_days + 1
}

# --- standby stack ---------------------------------------------------------------------------------

module "network" {
  source = "../modules/network"

  name               = local.name
  region             = var.region
  cidr_block         = var.vpc_cidr
  availability_zones = var.availability_zones
  flow_log_role_arn  = module.iam.flow_logs_role_arn
  logs_kms_key_arn   = module.audit_key.key_arn
}

data "aws_vpc_endpoint" "s3" {
  id = module.network.s3_endpoint_id
}

module "iam" {
  source = "../modules/iam"

  name                    = local.name
  region                  = var.region
  replica_region          = var.primary_region
  lake_bucket_arn         = "arn:${local.p}:s3:::${local.lake_bucket}"
  audit_bucket_arn        = "arn:${local.p}:s3:::${local.audit_bucket}"
  replica_bucket_arns     = [local.primary_lake_bucket_arn, local.primary_audit_bucket_arn]
  replica_key_arns        = [var.primary_data_key_arn, var.primary_audit_key_arn]
  tenant_key_arns         = [for k in module.tenant_key : k.key_arn]
  data_key_arn            = module.data_key.key_arn
  audit_key_arn           = module.audit_key.key_arn
  file_system_arn         = module.service.file_system_arn
  secret_arns             = [module.service.database_url_secret_arn]
  ecr_repository_arns     = var.ecr_repository_arns
  log_group_arns          = [module.service.log_group_arn]
  delivery_log_group_arns = [module.trail.log_group_arn, "arn:${local.p}:logs:${var.region}:${local.account}:log-group:/fhirlake/${local.name}/vpc-flow"]
}

module "catalog" {
  source = "../modules/catalog"

  name                      = local.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.service.task_security_group_id]
  kms_key_arn               = module.data_key.key_arn
  monitoring_role_arn       = module.iam.rds_monitoring_role_arn
  instance_class            = var.db_instance_class
  replica_source_arn        = var.primary_database_arn
}

module "service" {
  source = "../modules/service"

  name                 = local.name
  region               = var.region
  tenant               = keys(var.primary_tenant_key_arns)[0]
  image                = var.image
  base_url             = var.base_url
  vpc_id               = module.network.vpc_id
  vpc_cidr             = module.network.vpc_cidr
  s3_prefix_list_id    = data.aws_vpc_endpoint.s3.prefix_list_id
  private_subnet_ids   = module.network.private_subnet_ids
  public_subnet_ids    = module.network.public_subnet_ids
  load_balancer_cidrs  = var.internal_load_balancer ? [var.vpc_cidr] : [for i in range(length(var.availability_zones)) : cidrsubnet(var.vpc_cidr, 8, 240 + i)]
  internal             = var.internal_load_balancer
  app_client_cidrs     = var.app_client_cidrs
  emr_client_cidrs     = var.emr_client_cidrs
  certificate_arn      = var.certificate_arn
  trust_store_bucket   = module.config_bucket.name
  trust_store_key      = aws_s3_object.client_ca.key
  web_acl_arn          = var.web_acl_arn
  execution_role_arn   = module.iam.execution_role_arn
  gateway_role_arn     = module.iam.gateway_role_arn
  writer_role_arn      = module.iam.writer_role_arn
  data_kms_key_arn     = module.data_key.key_arn
  logs_kms_key_arn     = module.audit_key.key_arn
  kms_alias_prefix     = var.kms_alias_prefix
  audit_bucket_name    = local.audit_bucket
  lake_bucket_name     = local.lake_bucket
  region_role          = "secondary"
  audit_retention_days = var.audit_retention_days
  gateway_workers      = var.gateway_workers
  # Standby: no task runs until failover raises the counts (`aws ecs update-service` or these variables).
  gateway_min_count = var.gateway_min_count
  gateway_max_count = var.gateway_max_count
  writer_max_count  = var.writer_max_count
}

module "trail" {
  source = "../modules/trail"

  name                = local.name
  bucket_name         = module.trail_bucket.name
  kms_key_arn         = module.audit_key.key_arn
  cloudwatch_role_arn = module.iam.cloudtrail_role_arn
  data_bucket_arns    = [module.lake_bucket.arn, module.audit_bucket.arn, module.config_bucket.arn]
}

module "alarms" {
  source = "../modules/alarms"

  name         = local.name
  kms_key_arn  = module.audit_key.key_arn
  alarm_emails = var.alarm_emails
  rpo_seconds  = var.rpo_seconds
  standby      = var.gateway_min_count == 0
  replication_rules = local.back_to_primary ? {
    lake = {
      source_bucket      = local.lake_bucket
      destination_bucket = "${var.bucket_prefix}-lake-${var.primary_region}"
      rule_id            = "to-${var.primary_region}"
    }
    audit = {
      source_bucket      = local.audit_bucket
      destination_bucket = "${var.bucket_prefix}-audit-${var.primary_region}"
      rule_id            = "to-${var.primary_region}"
    }
  } : {}
  load_balancer_arn_suffix = module.service.load_balancer_arn_suffix
  target_group_arn_suffix  = module.service.target_group_arn_suffix
  app_log_group_name       = module.service.log_group_name
  trail_log_group_name     = module.trail.log_group_name
}
