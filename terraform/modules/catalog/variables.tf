variable "name" {
  description = "Identifier of the database and its companions."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets in at least two availability zones."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups of the tasks allowed to connect."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "Key encrypting storage, snapshots, Performance Insights and the master password secret."
  type        = string
}

variable "monitoring_role_arn" {
  description = "Role for RDS enhanced monitoring."
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL version."
  type        = string
  default     = "16.4"
}

variable "instance_class" {
  description = "Instance class."
  type        = string
  default     = "db.m6g.large"
}

variable "allocated_storage_gb" {
  description = "Initial storage; autoscaling up to five times this."
  type        = number
  default     = 50
}

variable "backup_retention_days" {
  description = "Automated backups (point-in-time recovery window)."
  type        = number
  default     = 35
}

variable "tags" {
  description = "Tags for the database resources."
  type        = map(string)
  default     = {}
}

variable "replica_source_arn" {
  description = "ARN of the primary region's database to replicate (DR region); null = a primary database."
  type        = string
  default     = null
}
