variable "name" {
  description = "Name prefix of the cluster, services and load balancer."
  type        = string
}

variable "region" {
  description = "AWS region of this deployment."
  type        = string
}

variable "tenant" {
  description = "fhirlake tenant of this deployment (FHIRLAKE_TENANT)."
  type        = string
}

variable "image" {
  description = "Container image with fhirlake installed (ECR URI with a digest)."
  type        = string
}

variable "base_url" {
  description = "Public base URL of the FHIR endpoint (FHIRLAKE_SERVER__BASE_URL)."
  type        = string
}

variable "vpc_id" {
  description = "VPC."
  type        = string
}

variable "vpc_cidr" {
  description = "VPC address range (egress to the interface endpoints and the database)."
  type        = string
}

variable "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint."
  type        = string
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks and the file system mount targets."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Subnets of an internet-facing load balancer."
  type        = list(string)
}

variable "load_balancer_cidrs" {
  description = "Address ranges of the load balancer's subnets: the only peers whose certificate header is trusted."
  type        = list(string)
}

variable "internal" {
  description = "Internal load balancer (reached over VPN or Direct Connect) instead of internet-facing."
  type        = bool
  default     = true
}

variable "app_client_cidrs" {
  description = "Address ranges of clinical apps (port 443)."
  type        = list(string)
}

variable "emr_client_cidrs" {
  description = "Address ranges of EMR integration engines (port 8443, mutual TLS)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate of the public host name."
  type        = string
}

variable "trust_store_bucket" {
  description = "Bucket holding the PEM bundle of the CA that issues EMR client certificates."
  type        = string
}

variable "trust_store_key" {
  description = "Key of that PEM bundle (the same CA as FHIRLAKE_TLS__CLIENT_CA_FILE)."
  type        = string
}

variable "access_log_bucket_name" {
  description = "Optional SSE-S3 bucket for ALB access logs; null = off (the audit trail records every request)."
  type        = string
  default     = null
}

variable "web_acl_arn" {
  description = "Optional WAF web ACL to attach to the load balancer."
  type        = string
  default     = null
}

variable "execution_role_arn" {
  description = "ECS task execution role."
  type        = string
}

variable "gateway_role_arn" {
  description = "Task role of the gateway."
  type        = string
}

variable "writer_role_arn" {
  description = "Task role of the writer."
  type        = string
}

variable "data_kms_key_arn" {
  description = "Key of the file system and the secrets."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "Key of the container log group."
  type        = string
}

variable "kms_alias_prefix" {
  description = "FHIRLAKE_SECURITY__KMS__AWS_ALIAS_PREFIX: tenant KEKs are <prefix>-<tenant>."
  type        = string
  default     = "alias/fhirlake"
}

variable "lake_bucket_name" {
  description = "This region's lake bucket: the Iceberg warehouse is s3://<name>/warehouse."
  type        = string
}

variable "region_role" {
  description = "Name of this region in fhirlake's DR settings: primary or secondary."
  type        = string
  default     = "primary"
  validation {
    condition     = contains(["primary", "secondary"], var.region_role)
    error_message = "region_role is primary or secondary."
  }
}

variable "audit_bucket_name" {
  description = "Audit WORM bucket (FHIRLAKE_AUDIT__WORM_BUCKET)."
  type        = string
}

variable "audit_prefix" {
  description = "Key prefix of the audit WORM copy."
  type        = string
  default     = "audit"
}

variable "audit_retention_days" {
  description = "FHIRLAKE_AUDIT__RETENTION_DAYS; at most the bucket's Object Lock default retention."
  type        = number
  default     = 2190
}

variable "secret_replica_region" {
  description = "Region to replicate the secrets to (the DR region); null = none."
  type        = string
  default     = null
}

variable "secret_replica_kms_key_arn" {
  description = "Key of the secret replicas in the DR region."
  type        = string
  default     = null
}

variable "gateway_cpu" {
  description = "vCPU units of a gateway task."
  type        = number
  default     = 2048
}

variable "gateway_memory" {
  description = "Memory (MiB) of a gateway task."
  type        = number
  default     = 4096
}

variable "gateway_workers" {
  description = "fhirlake serve --workers: gateway processes per task."
  type        = number
  default     = 2
}

variable "gateway_min_count" {
  description = "Fewest gateway tasks."
  type        = number
  default     = 1
}

variable "gateway_max_count" {
  description = "Most gateway tasks. 1 until issue 9: the journal is SQLite on the data dir, which one task may write."
  type        = number
  default     = 1
}

variable "writer_cpu" {
  description = "vCPU units of a writer task."
  type        = number
  default     = 2048
}

variable "writer_memory" {
  description = "Memory (MiB) of a writer task."
  type        = number
  default     = 8192
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

variable "log_retention_days" {
  description = "Retention of the container logs (no PHI: see fhirlake/logs.py)."
  type        = number
  default     = 2192
}

variable "tags" {
  description = "Tags for the resources."
  type        = map(string)
  default     = {}
}
