# The whole AWS side of db-sync: a versioned bucket with lifecycle rules, a task definition
# whose task role may touch only this database's keys, and a one-writer ECS service.

locals {
  # One key for everything: the bucket's backup lifecycle rule, DB_S3_KEY and the IAM grant.
  db_key       = "db.sqlite3"
  db_directory = "/data"
  db_filename  = "app.sqlite3"
}

module "bucket" {
  source = "../../modules/bucket"

  bucket_name = var.bucket_name
  kms_key_arn = var.kms_key_arn
  db_keys     = [local.db_key]

  noncurrent_version_expiration_days = 30
  noncurrent_versions_to_keep        = 50
}

module "task" {
  source = "../../modules/ecs-task"

  name          = var.name
  mode          = var.mode
  app_image     = var.app_image
  app_command   = var.app_command
  app_port      = var.app_port
  db_sync_image = var.db_sync_image

  # The application finds the restored database here.
  app_environment = {
    DATABASE_PATH = "${local.db_directory}/${local.db_filename}"
  }

  bucket_name   = module.bucket.bucket_name
  bucket_arn    = module.bucket.bucket_arn
  bucket_region = module.bucket.bucket_region
  kms_key_arn   = module.bucket.kms_key_arn
  db_key        = local.db_key
  db_directory  = local.db_directory
  db_filename   = local.db_filename

  sync_interval            = "5m"
  shutdown_timeout_seconds = 20
}

# The same least-privilege grant, unattached, for whoever runs db-sync by hand against this
# database (`db-sync restore`, listing backups): attach its JSON to that person's or CI's role.
module "operator_policy" {
  source = "../../modules/iam-policy"

  bucket_arn  = module.bucket.bucket_arn
  db_key      = local.db_key
  kms_key_arn = module.bucket.kms_key_arn
}

resource "aws_ecs_cluster" "this" {
  name = var.name
}

resource "aws_ecs_service" "this" {
  name            = var.name
  cluster         = aws_ecs_cluster.this.id
  task_definition = module.task.task_definition_arn
  launch_type     = "FARGATE"

  # SQLite has one writer. Never run two tasks at once: a deployment stops the old task
  # (whose final upload completes within its stopTimeout) before it starts the new one,
  # which then restores that final upload.
  desired_count                      = 1
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }
}

# db-sync writes its metrics into its log stream as CloudWatch Embedded Metric Format
# (cloudwatch_metrics, on by default in the task module). LastSuccessfulSyncAgeSeconds is the
# time since the last sync run that reached S3 or found nothing to upload: it stays below the
# interval (5 min here) while everything works, and rises when uploads fail, the lease is lost
# or the sidecar is stuck. Missing data counts as breaching: a task that never becomes ready, or
# no task at all, reports nothing. 15 minutes (three intervals) covers a deployment's gap.
resource "aws_cloudwatch_metric_alarm" "sync_age" {
  alarm_name          = "${var.name}-db-sync-last-successful-sync-age"
  alarm_description   = "db-sync has not completed a sync of ${local.db_key} for three intervals: changes may not be reaching S3. See the db-sync container logs (FINAL SYNC FAILED, LEASE LOST, LEASE WAIT STALLED, sync failed)."
  namespace           = module.task.metric_namespace
  metric_name         = "LastSuccessfulSyncAgeSeconds"
  dimensions          = module.task.metric_dimensions
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 900
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}
