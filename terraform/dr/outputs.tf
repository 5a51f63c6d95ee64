output "lake_bucket" {
  description = "Replica of the Iceberg warehouse."
  value       = module.lake_bucket.name
}

output "audit_bucket" {
  description = "Replica of the audit WORM copy (same COMPLIANCE retention)."
  value       = module.audit_bucket.name
}

output "data_key_arn" {
  description = "Replica of the data key (same key id as the primary)."
  value       = module.data_key.key_arn
}

output "tenant_key_arns" {
  description = "Replica tenant KEKs by tenant."
  value       = { for t, k in module.tenant_key : t => k.key_arn }
}

output "load_balancer_dns_name" {
  description = "Where the FHIR host name points after failover."
  value       = module.service.load_balancer_dns_name
}

output "cluster_name" {
  description = "ECS cluster; failover scales its gateway service up."
  value       = module.service.cluster_name
}

output "database_endpoint" {
  description = "Read replica endpoint (promote it at failover)."
  value       = module.catalog.endpoint
}

output "alarm_topic_arn" {
  description = "SNS topic of this region's alarms."
  value       = module.alarms.topic_arn
}

output "replication_role_arn" {
  description = "Role of failback replication; give it to the primary root as dr_replication_role_arn."
  value       = module.iam.replication_role_arn
}
