output "task_definition_arn" {
  description = "ARN (with revision) of the task definition, for an aws_ecs_service."
  value       = aws_ecs_task_definition.this.arn
}

output "family" {
  description = "Task definition family."
  value       = aws_ecs_task_definition.this.family
}

output "task_role_arn" {
  description = "ARN of the task role (db-sync's policy is attached to it)."
  value       = aws_iam_role.task.arn
}

output "task_role_name" {
  description = "Name of the task role, to attach the application's own policies."
  value       = aws_iam_role.task.name
}

output "execution_role_arn" {
  description = "ARN of the task execution role."
  value       = aws_iam_role.execution.arn
}

output "log_group_name" {
  description = "CloudWatch log group of both containers (stream prefixes: the container names)."
  value       = aws_cloudwatch_log_group.this.name
}

output "database_path" {
  description = "Path of the database inside the containers (DB_LOCAL_PATH): point the application at it."
  value       = "${var.db_directory}/${var.db_filename}"
}

output "app_container_name" {
  description = "Name of the application container (for a load balancer's container_name)."
  value       = var.app_container_name
}

output "db_sync_policy_json" {
  description = "The least-privilege policy attached to the task role."
  value       = module.db_sync_policy.json
}

output "container_definitions" {
  description = "The container definitions as registered (JSON)."
  value       = aws_ecs_task_definition.this.container_definitions
}

output "metric_dimensions" {
  description = "Dimensions of db-sync's CloudWatch metrics for this database (namespace var.cloudwatch_namespace), e.g. for an alarm on LastSuccessfulSyncAgeSeconds."
  value       = { Database = "s3://${var.bucket_name}/${var.db_key}" }
}

output "metric_namespace" {
  description = "CloudWatch namespace of db-sync's metrics."
  value       = var.cloudwatch_namespace
}
