output "key_arn" {
  description = "ARN of the key (primary or replica)."
  value       = local.key_arn
}

output "key_id" {
  description = "Key id; a multi-region replica has the primary's id."
  value       = local.key_id
}
