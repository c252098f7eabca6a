output "json" {
  description = "The policy document as JSON, to attach to the ECS task role (or any role that runs db-sync)."
  value       = data.aws_iam_policy_document.this.json
}

output "minified_json" {
  description = "The policy document as minified JSON (inline role policies are limited to 10,240 characters)."
  value       = data.aws_iam_policy_document.this.minified_json
}

output "object_arns" {
  description = "The object ARNs the policy grants: the key itself and KEY.*."
  value       = local.object_arns
}
