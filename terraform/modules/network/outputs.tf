output "vpc_id" {
  description = "VPC id."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "VPC address range."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Subnets of the tasks and the database (no internet route)."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Subnets of the load balancer."
  value       = aws_subnet.public[*].id
}

output "s3_endpoint_id" {
  description = "Gateway endpoint for S3 (bucket policies may require it)."
  value       = aws_vpc_endpoint.s3.id
}
