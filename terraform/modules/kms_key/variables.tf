variable "description" {
  description = "What the key protects (shown in the KMS console)."
  type        = string
}

variable "replica_of" {
  description = "ARN of the multi-region primary key to replicate; null creates a new primary."
  type        = string
  default     = null
}

variable "aliases" {
  description = "Aliases pointing at the key, e.g. alias/fhirlake-default (the aws-kms provider's tenant KEK)."
  type        = list(string)
  default     = []
}

variable "admin_role_arns" {
  description = "Principals that administer the key (never use it). Empty: the account root, i.e. IAM decides."
  type        = list(string)
  default     = []
}

variable "user_role_arns" {
  description = "Roles that may use the key for data keys (the fhirlake task roles, the replication role)."
  type        = list(string)
  default     = []
}

variable "service_principals" {
  description = "AWS service principals that use the key on behalf of this account (cloudtrail.amazonaws.com, cloudwatch.amazonaws.com)."
  type        = list(string)
  default     = []
}

variable "logs_region" {
  description = "Region whose CloudWatch Logs may use the key for this account's log groups; null = none."
  type        = string
  default     = null
}

variable "via_services" {
  description = "kms:ViaService values (rds.<region>.amazonaws.com, …) through which the admins and users may use the key; grants only for AWS resources."
  type        = list(string)
  default     = []
}

variable "rotation_period_in_days" {
  description = "Automatic rotation period of the key material."
  type        = number
  default     = 365

  validation {
    condition     = var.rotation_period_in_days >= 90 && var.rotation_period_in_days <= 365
    error_message = "KMS rotates every 90 to 365 days; fhirlake's policy is at most yearly."
  }
}

variable "tags" {
  description = "Tags for the key."
  type        = map(string)
  default     = {}
}
