variable "name" {
  description = "Name of the trail."
  type        = string
}

variable "bucket_name" {
  description = "Bucket receiving the log files (its policy must grant CloudTrail delivery)."
  type        = string
}

variable "kms_key_arn" {
  description = "Key encrypting log files, the log group and the SNS topic (multi-region)."
  type        = string
}

variable "cloudwatch_role_arn" {
  description = "Role CloudTrail assumes to write to CloudWatch Logs."
  type        = string
}

variable "data_bucket_arns" {
  description = "Buckets whose object reads and writes are recorded as data events."
  type        = list(string)
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch copy of the trail."
  type        = number
  default     = 2192
}

variable "tags" {
  description = "Tags for the trail."
  type        = map(string)
  default     = {}
}
