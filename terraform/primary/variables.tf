variable "name" {
  description = "Short name of the installation; prefixes resources and KMS aliases."
  type        = string
  default     = "fhirlake"
}

variable "region" {
  description = "Primary AWS region."
  type        = string
  default     = "us-east-1"
}

variable "dr_region" {
  description = "Disaster-recovery region (the dr root is applied there)."
  type        = string
  default     = "us-west-2"
}

variable "dr_replication_role_arn" {
  description = "Failback: the dr root's replication role (its output replication_role_arn), allowed to encrypt replicas with this region's keys; null until failback is set up."
  type        = string
  default     = null
}

variable "bucket_prefix" {
  description = "Globally unique prefix of bucket names; buckets are <prefix>-<lake|audit|trail|config>-<region>."
  type        = string
}

variable "tenants" {
  description = "fhirlake tenants; each gets a multi-region KEK behind <kms_alias_prefix>-<tenant>. The first is the deployment's FHIRLAKE_TENANT."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.tenants) > 0
    error_message = "At least one tenant."
  }
}

variable "kms_alias_prefix" {
  description = "FHIRLAKE_SECURITY__KMS__AWS_ALIAS_PREFIX."
  type        = string
  default     = "alias/fhirlake"
}

variable "key_admin_role_arns" {
  description = "Roles that administer (never use) the KMS keys. Empty: the account root, i.e. IAM policies decide."
  type        = list(string)
  default     = []
}

variable "audit_retention_days" {
  description = "Object Lock (COMPLIANCE) retention of the audit and trail buckets, and FHIRLAKE_AUDIT__RETENTION_DAYS."
  type        = number
  default     = 2190

  validation {
    condition     = var.audit_retention_days >= 2190
    error_message = "HIPAA 164.316(b)(2): keep audit records at least six years (2190 days)."
  }
}

variable "lake_noncurrent_version_days" {
  description = "Days replaced lake objects are kept as noncurrent versions."
  type        = number
  default     = 90
}

variable "rpo_seconds" {
  description = "Recovery point objective; replication latency above it alarms."
  type        = number
  default     = 60
}

variable "vpc_cidr" {
  description = "VPC address range."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones of this region, by name (at least two)."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b"]
}

variable "image" {
  description = "fhirlake container image (ECR URI pinned by digest)."
  type        = string
}

variable "ecr_repository_arns" {
  description = "ECR repositories the tasks pull from."
  type        = list(string)
}

variable "base_url" {
  description = "Public base URL of the FHIR endpoint, e.g. https://fhir.example-hospital.org."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for the public host name."
  type        = string
}

variable "client_ca_bundle_file" {
  description = "Local path of the PEM CA bundle that issues EMR client certificates (the mTLS trust store)."
  type        = string
}

variable "internal_load_balancer" {
  description = "Internal load balancer (reached over VPN / Direct Connect). Recommended for hospital networks."
  type        = bool
  default     = true
}

variable "app_client_cidrs" {
  description = "Address ranges of clinical apps (HTTPS 443)."
  type        = list(string)
}

variable "emr_client_cidrs" {
  description = "Address ranges of EMR integration engines (mutual TLS 8443)."
  type        = list(string)
}

variable "web_acl_arn" {
  description = "Optional WAF web ACL for the load balancer."
  type        = string
  default     = null
}

variable "db_instance_class" {
  description = "RDS instance class of the PostgreSQL database."
  type        = string
  default     = "db.m6g.large"
}

variable "gateway_workers" {
  description = "fhirlake serve --workers per task."
  type        = number
  default     = 2
}

variable "gateway_min_count" {
  description = "Fewest gateway tasks."
  type        = number
  default     = 1
}

variable "gateway_max_count" {
  description = "Most gateway tasks; keep 1 until the journal leaves the data dir (issue 9)."
  type        = number
  default     = 1
}

variable "writer_max_count" {
  description = "Writer tasks: 1 (`fhirlake writer` commits to Iceberg), or 0 to let a gateway commit."
  type        = number
  default     = 1
  validation {
    condition     = contains([0, 1], var.writer_max_count)
    error_message = "One committer holds lake/writer.lock: writer_max_count is 0 or 1."
  }
}

variable "alarm_emails" {
  description = "Addresses that receive alarm notifications."
  type        = list(string)
  default     = []
}
