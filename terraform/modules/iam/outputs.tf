output "execution_role_arn" {
  description = "ECS task execution role."
  value       = aws_iam_role.execution.arn
}

output "gateway_role_arn" {
  description = "Task role of the gateway (fhirlake serve)."
  value       = aws_iam_role.gateway.arn
}

output "writer_role_arn" {
  description = "Task role of the lake writer (fhirlake writer)."
  value       = aws_iam_role.writer.arn
}

output "replication_role_arn" {
  description = "Role S3 replication assumes."
  value       = aws_iam_role.replication.arn
}

output "flow_logs_role_arn" {
  description = "Role VPC flow logs assume."
  value       = aws_iam_role.flow_logs.arn
}

output "cloudtrail_role_arn" {
  description = "Role CloudTrail assumes to deliver to CloudWatch Logs."
  value       = aws_iam_role.cloudtrail.arn
}

output "rds_monitoring_role_arn" {
  description = "Role of RDS enhanced monitoring."
  value       = aws_iam_role.rds_monitoring.arn
}
