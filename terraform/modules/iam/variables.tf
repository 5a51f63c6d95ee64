variable "name" {
  description = "Name prefix of the roles."
  type        = string
}

variable "region" {
  description = "Region of this deployment (kms:ViaService conditions)."
  type        = string
}

variable "replica_region" {
  description = "Region that the buckets replicate to."
  type        = string
}

variable "lake_bucket_arn" {
  description = "The Iceberg warehouse bucket."
  type        = string
}

variable "audit_bucket_arn" {
  description = "The audit WORM bucket (Object Lock)."
  type        = string
}

variable "audit_prefix" {
  description = "Key prefix of the audit WORM copy (FHIRLAKE_AUDIT__WORM_PREFIX)."
  type        = string
  default     = "audit"
}

variable "replica_bucket_arns" {
  description = "Destination buckets of replication (in replica_region)."
  type        = list(string)
}

variable "replica_key_arns" {
  description = "KMS keys of the destination buckets (the multi-region replicas)."
  type        = list(string)
}

variable "tenant_key_arns" {
  description = "Tenant KEKs (alias/fhirlake-<tenant>) the tasks wrap data keys with."
  type        = list(string)
}

variable "data_key_arn" {
  description = "Key of the lake bucket, the file system, the database and the secrets."
  type        = string
}

variable "audit_key_arn" {
  description = "Key of the audit bucket, CloudTrail and the log groups."
  type        = string
}

variable "file_system_arn" {
  description = "EFS file system holding the data dir."
  type        = string
}

variable "secret_arns" {
  description = "Secrets the tasks read (database URL)."
  type        = list(string)
}

variable "ecr_repository_arns" {
  description = "ECR repositories of the fhirlake image."
  type        = list(string)
}

variable "log_group_arns" {
  description = "Log groups of the containers."
  type        = list(string)
}

variable "delivery_log_group_arns" {
  description = "Log groups that VPC flow logs and CloudTrail deliver to."
  type        = list(string)
}

variable "tags" {
  description = "Tags for the roles."
  type        = map(string)
  default     = {}
}
