output "lake_bucket" {
  description = "Iceberg warehouse bucket (replicates to the DR region)."
  value       = module.lake_bucket.name
}

output "audit_bucket" {
  description = "Audit WORM bucket: FHIRLAKE_AUDIT__WORM_BUCKET."
  value       = module.audit_bucket.name
}

output "data_key_arn" {
  description = "Multi-region key of the lake, file system, database and secrets; the dr root replicates it."
  value       = module.data_key.key_arn
}

output "audit_key_arn" {
  description = "Multi-region key of the audit and trail buckets and the log groups; the dr root replicates it."
  value       = module.audit_key.key_arn
}

output "tenant_key_arns" {
  description = "Multi-region tenant KEKs by tenant; the dr root replicates them."
  value       = { for t, k in module.tenant_key : t => k.key_arn }
}

output "replication_role_arn" {
  description = "Role of S3 replication; the dr root lets it use the replica keys."
  value       = module.iam.replication_role_arn
}

output "load_balancer_dns_name" {
  description = "Point the FHIR host name here."
  value       = module.service.load_balancer_dns_name
}

output "database_endpoint" {
  description = "PostgreSQL host:port (policy store; Iceberg catalog from issue 9)."
  value       = module.catalog.endpoint
}

output "database_master_secret_arn" {
  description = "Secret with the RDS-generated master password."
  value       = module.catalog.master_secret_arn
}

output "database_url_secret_arn" {
  description = "Secret the operator fills with the fhirlake database URL."
  value       = module.service.database_url_secret_arn
}

output "alarm_topic_arn" {
  description = "SNS topic of every alarm."
  value       = module.alarms.topic_arn
}

output "trail_arn" {
  description = "CloudTrail trail."
  value       = module.trail.trail_arn
}

output "database_arn" {
  description = "ARN of the database; the dr root makes a cross-region read replica of it."
  value       = module.catalog.arn
}
