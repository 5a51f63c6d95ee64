output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "gateway_service_name" {
  description = "ECS service of the gateway."
  value       = aws_ecs_service.gateway.name
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer (point the public host name at it)."
  value       = aws_lb.this.dns_name
}

output "load_balancer_arn_suffix" {
  description = "ARN suffix of the load balancer (CloudWatch dimension)."
  value       = aws_lb.this.arn_suffix
}

output "target_group_arn_suffix" {
  description = "ARN suffix of the gateway target group (CloudWatch dimension)."
  value       = aws_lb_target_group.gateway.arn_suffix
}

output "task_security_group_id" {
  description = "Security group of the tasks (database ingress)."
  value       = aws_security_group.tasks.id
}

output "log_group_name" {
  description = "Log group of the containers."
  value       = aws_cloudwatch_log_group.this.name
}

output "log_group_arn" {
  description = "Log group of the containers."
  value       = aws_cloudwatch_log_group.this.arn
}

output "file_system_arn" {
  description = "EFS file system holding the data dir."
  value       = aws_efs_file_system.data.arn
}

output "database_url_secret_arn" {
  description = "Secret whose value the operator sets to the database URL."
  value       = aws_secretsmanager_secret.database_url.arn
}
