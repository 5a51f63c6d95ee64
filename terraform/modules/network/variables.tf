variable "name" {
  description = "Name prefix of the network resources."
  type        = string
}

variable "region" {
  description = "AWS region (for the endpoint service names)."
  type        = string
}

variable "cidr_block" {
  description = "VPC address range."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones to spread subnets over, by name (multi-AZ database and tasks need at least 2)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4
    error_message = "Use 2 to 4 availability zones."
  }
}

variable "flow_log_role_arn" {
  description = "Role VPC flow logs use to write to CloudWatch Logs."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key encrypting the flow log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the flow logs, in days (at least a year)."
  type        = number
  default     = 2192
}

variable "tags" {
  description = "Tags for the network resources."
  type        = map(string)
  default     = {}
}
