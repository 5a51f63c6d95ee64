variable "name" {
  description = "Name prefix of the alarms."
  type        = string
}

variable "kms_key_arn" {
  description = "Key encrypting the SNS topic."
  type        = string
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic."
  type        = list(string)
  default     = []
}

variable "replication_rules" {
  description = "Replication rules to watch, by name: source bucket, destination bucket, rule id."
  type = map(object({
    source_bucket      = string
    destination_bucket = string
    rule_id            = string
  }))
  default = {}
}

variable "rpo_seconds" {
  description = "Recovery point objective: replication latency above this alarms."
  type        = number
  default     = 60
}

variable "error_rate_percent" {
  description = "5xx share of requests above which the error-rate alarm fires."
  type        = number
  default     = 1
}

variable "load_balancer_arn_suffix" {
  description = "CloudWatch dimension of the load balancer."
  type        = string
}

variable "target_group_arn_suffix" {
  description = "CloudWatch dimension of the gateway target group."
  type        = string
}

variable "app_log_group_name" {
  description = "Log group of the fhirlake containers (JSON lines)."
  type        = string
}

variable "trail_log_group_name" {
  description = "CloudWatch log group of the CloudTrail trail."
  type        = string
}

variable "tags" {
  description = "Tags for the alarms."
  type        = map(string)
  default     = {}
}

variable "standby" {
  description = "A standby region runs no gateway until failover: no alarm on zero ready targets."
  type        = bool
  default     = false
}
