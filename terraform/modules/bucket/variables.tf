variable "name" {
  description = "Globally unique bucket name."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer-managed (multi-region) KMS key for SSE-KMS; the only key uploads may name."
  type        = string
}

variable "object_lock_days" {
  description = "Default Object Lock retention in COMPLIANCE mode, in days; null = no Object Lock."
  type        = number
  default     = null

  validation {
    condition     = var.object_lock_days == null ? true : var.object_lock_days >= 2190
    error_message = "Audit records are kept at least six years (HIPAA 164.316(b)(2)): object_lock_days >= 2190."
  }
}

variable "transition_to_ia_days" {
  description = "Days after which current objects move to STANDARD_IA."
  type        = number
  default     = 90
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted object version is kept (time travel, undo of mistakes)."
  type        = number
  default     = 90
}

variable "replication_destination" {
  description = "Cross-region replication target (bucket ARN, its region, its KMS key, the replication role); null = none."
  type = object({
    bucket_arn  = string
    region      = string
    kms_key_arn = string
    role_arn    = string
  })
  default = null
}

variable "extra_policy_json" {
  description = "Further bucket policy statements (e.g. CloudTrail's delivery grant), merged with the TLS-only policy."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags for the bucket."
  type        = map(string)
  default     = {}
}
