output "bucket_name" {
  description = "Bucket that keeps the database."
  value       = module.bucket.bucket_name
}

output "task_definition_arn" {
  description = "Task definition registered for the service."
  value       = module.task.task_definition_arn
}

output "service_name" {
  description = "ECS service running the task."
  value       = aws_ecs_service.this.name
}

output "log_group_name" {
  description = "CloudWatch log group of the task's containers."
  value       = module.task.log_group_name
}

output "database_path" {
  description = "Path of the database inside the task."
  value       = module.task.database_path
}

output "task_role_policy_json" {
  description = "db-sync's policy as attached to the task role."
  value       = module.task.db_sync_policy_json
}

output "operator_policy_json" {
  description = "The same grant, for an operator's or CI's role."
  value       = module.operator_policy.json
}
