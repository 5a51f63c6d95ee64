output "endpoint" {
  description = "host:port of the database."
  value       = aws_db_instance.this.endpoint
}

output "master_secret_arn" {
  description = "Secrets Manager secret holding the generated master password."
  value       = var.replica_source_arn == null ? aws_db_instance.this.master_user_secret[0].secret_arn : null
}

output "arn" {
  description = "ARN of the database (the DR root replicates it)."
  value       = aws_db_instance.this.arn
}
