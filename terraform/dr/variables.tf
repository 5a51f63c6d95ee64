variable "name" {
  description = "Short name of the installation; the same as in the primary root."
  type        = string
  default     = "fhirlake"
}

variable "region" {
  description = "Disaster-recovery AWS region (the primary root's dr_region)."
  type        = string
  default     = "us-west-2"
}

variable "primary_region" {
  description = "Primary AWS region."
  type        = string
  default     = "us-east-1"
}

variable "bucket_prefix" {
  description = "The same bucket prefix as the primary root."
  type        = string
}

variable "primary_data_key_arn" {
  description = "Output data_key_arn of the primary root (multi-region primary key to replicate)."
  type        = string
}

variable "primary_audit_key_arn" {
  description = "Output audit_key_arn of the primary root."
  type        = string
}

variable "primary_tenant_key_arns" {
  description = "Output tenant_key_arns of the primary root: tenant => multi-region KEK."
  type        = map(string)

  validation {
    condition     = length(var.primary_tenant_key_arns) > 0
    error_message = "At least one tenant KEK."
  }
}

variable "primary_replication_role_arn" {
  description = "Output replication_role_arn of the primary root: may encrypt replicas with this region's keys."
  type        = string
}

variable "primary_database_arn" {
  description = "Output database_arn of the primary root: the DR database is its cross-region read replica."
  type        = string
}

variable "replicate_to_primary" {
  description = "Failback: replicate this region's buckets back to the primary region (turn on after a failover)."
  type        = bool
  default     = false
}

variable "kms_alias_prefix" {
  description = "FHIRLAKE_SECURITY__KMS__AWS_ALIAS_PREFIX (the replica KEKs get the same aliases here)."
  type        = string
  default     = "alias/fhirlake"
}

variable "key_admin_role_arns" {
  description = "Roles that administer (never use) the replica keys. Empty: the account root."
  type        = list(string)
  default     = []
}

variable "audit_retention_days" {
  description = "Object Lock (COMPLIANCE) retention of the replicated audit records; the same as the primary."
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
  description = "Recovery point objective for failback replication."
  type        = number
  default     = 60
}

variable "vpc_cidr" {
  description = "VPC address range (distinct from the primary's, for peering)."
  type        = string
  default     = "10.41.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones of this region, by name (at least two)."
  type        = list(string)
  default     = ["us-west-2a", "us-west-2b"]
}

variable "image" {
  description = "fhirlake container image in this region (ECR replication)."
  type        = string
}

variable "ecr_repository_arns" {
  description = "ECR repositories in this region."
  type        = list(string)
}

variable "base_url" {
  description = "Public base URL of the FHIR endpoint (the same host name; DNS moves at failover)."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for the host name, in this region."
  type        = string
}

variable "client_ca_bundle_file" {
  description = "PEM CA bundle that issues EMR client certificates."
  type        = string
}

variable "internal_load_balancer" {
  description = "Internal load balancer."
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
  description = "RDS instance class of the read replica."
  type        = string
  default     = "db.m6g.large"
}

variable "gateway_workers" {
  description = "fhirlake serve --workers per task."
  type        = number
  default     = 2
}

variable "gateway_min_count" {
  description = "Gateway tasks in standby (0) or after failover (1)."
  type        = number
  default     = 0
}

variable "gateway_max_count" {
  description = "Most gateway tasks after failover; 1 until issue 9."
  type        = number
  default     = 1
}

variable "writer_max_count" {
  description = "Writer tasks in standby (0: a gateway commits after failover) or after failover (1)."
  type        = number
  default     = 0
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
