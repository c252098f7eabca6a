# An ECS (Fargate) task definition that runs an application with its SQLite database kept
# durable by db-sync. Two shapes (var.mode):
#
#   sidecar  the app container plus a db-sync container; both mount one task-storage volume
#            at var.db_directory. The app starts only once db-sync is HEALTHY (the restore is
#            done) and is stopped before db-sync, so the final snapshot sees its last writes.
#   wrapper  one container: the app image contains db-sync, whose `exec` command restores,
#            starts the app as its child, syncs while it runs, and uploads after it exits.
#
# terraform/README.md explains each choice.

data "aws_region" "current" {}

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  region                 = data.aws_region.current.region
  db_sync_container_name = "db-sync"
  volume_name            = "db"

  # ECS sends SIGKILL stopTimeout seconds after SIGTERM. db-sync gets its whole shutdown
  # deadline (DB_SYNC_SHUTDOWN_TIMEOUT) plus this margin to finish logging and exit, so it is
  # never killed in the middle of the final upload.
  stop_timeout_margin_seconds = 10
  db_sync_stop_timeout        = min(120, var.shutdown_timeout_seconds + local.stop_timeout_margin_seconds)

  # In wrapper mode the one container first stops the app (db-sync forwards SIGTERM to it),
  # then takes the final snapshot: it needs both budgets.
  wrapper_stop_timeout = min(120, var.app_stop_timeout_seconds + var.shutdown_timeout_seconds + local.stop_timeout_margin_seconds)

  # Every name is one that db-sync reads (src/config.ts SETTINGS); test/unit/terraform.test.ts
  # checks them against the ENV_VARS list exported there. Values are strings: ECS rejects numbers.
  db_sync_environment = [
    { name = "DB_S3_BUCKET", value = var.bucket_name },
    { name = "DB_S3_KEY", value = var.db_key },
    { name = "DB_S3_REGION", value = coalesce(var.bucket_region, local.region) },
    { name = "DB_LOCAL_PATH", value = "${var.db_directory}/${var.db_filename}" },
    { name = "DB_SYNC_INTERVAL", value = var.sync_interval },
    { name = "DB_SYNC_HEALTH_PORT", value = tostring(var.health_port) },
    { name = "DB_SYNC_HEALTH_HOST", value = "127.0.0.1" },
    { name = "DB_SYNC_SHUTDOWN_TIMEOUT", value = "${var.shutdown_timeout_seconds}s" },
    { name = "DB_SYNC_INTEGRITY_CHECK", value = var.integrity_check },
    { name = "DB_SYNC_LEASE", value = var.lease_mode },
    # A task still waiting for the lease when its health check starts counting is a stalled
    # deployment: db-sync then logs LEASE WAIT STALLED and reports LeaseWaitSeconds.
    { name = "DB_SYNC_LEASE_WAIT_WARN", value = "${max(1, var.health_check_start_period_seconds)}s" },
    { name = "DB_SYNC_CLOUDWATCH_METRICS", value = tostring(var.cloudwatch_metrics) },
    { name = "DB_SYNC_CLOUDWATCH_NAMESPACE", value = var.cloudwatch_namespace },
    { name = "LOG_LEVEL", value = var.log_level },
  ]

  # Wrapper mode only: `db-sync exec` stops the app itself, so it must give the app the same time
  # to exit that its stopTimeout budget reserves (without it, db-sync's 10 s default applies).
  exec_environment = [
    { name = "DB_SYNC_CHILD_STOP_TIMEOUT", value = "${var.app_stop_timeout_seconds}s" },
  ]

  app_environment = [for name in sort(keys(var.app_environment)) : { name = name, value = var.app_environment[name] }]

  app_port_mappings = var.app_port == null ? [] : [{ containerPort = var.app_port, protocol = "tcp" }]

  db_mount_point = {
    sourceVolume  = local.volume_name
    containerPath = var.db_directory
    readOnly      = false
  }

  # `db-sync health` probes the health server's /readyz and exits 0 only once the restore is
  # done, so HEALTHY means "the database file is in place".
  db_sync_health_check = {
    command     = ["CMD", "db-sync", "health"]
    interval    = var.health_check_interval_seconds
    timeout     = var.health_check_timeout_seconds
    retries     = var.health_check_retries
    startPeriod = var.health_check_start_period_seconds
  }

  db_sync_container = {
    name        = local.db_sync_container_name
    image       = var.db_sync_image
    essential   = true
    entryPoint  = ["db-sync"]
    command     = var.db_sync_command
    environment = local.db_sync_environment
    mountPoints = [local.db_mount_point]
    healthCheck = local.db_sync_health_check
    stopTimeout = local.db_sync_stop_timeout

    # A tiny init as PID 1 forwards SIGTERM to db-sync and reaps zombies.
    linuxParameters = {
      initProcessEnabled = true
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.this.name
        "awslogs-region"        = local.region
        "awslogs-stream-prefix" = local.db_sync_container_name
      }
    }
  }

  app_container = {
    name         = var.app_container_name
    image        = var.app_image
    essential    = true
    command      = var.app_command
    environment  = local.app_environment
    portMappings = local.app_port_mappings
    mountPoints  = [local.db_mount_point]
    stopTimeout  = var.app_stop_timeout_seconds

    # Start only after the restore (db-sync HEALTHY). ECS stops containers in reverse
    # dependency order, so on shutdown the app stops first and db-sync's final snapshot
    # includes everything the app wrote.
    dependsOn = [
      {
        containerName = local.db_sync_container_name
        condition     = "HEALTHY"
      },
    ]

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.this.name
        "awslogs-region"        = local.region
        "awslogs-stream-prefix" = var.app_container_name
      }
    }
  }

  wrapper_container = {
    name         = var.app_container_name
    image        = var.app_image
    essential    = true
    entryPoint   = var.wrapper_entrypoint
    command      = var.app_command
    environment  = concat(local.db_sync_environment, local.exec_environment, local.app_environment)
    portMappings = local.app_port_mappings
    mountPoints  = [local.db_mount_point]
    healthCheck  = local.db_sync_health_check
    stopTimeout  = local.wrapper_stop_timeout

    linuxParameters = {
      initProcessEnabled = true
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.this.name
        "awslogs-region"        = local.region
        "awslogs-stream-prefix" = var.app_container_name
      }
    }
  }

  sidecar_container_definitions = [local.app_container, local.db_sync_container]
  wrapper_container_definitions = [local.wrapper_container]
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

# --- IAM ---------------------------------------------------------------------------------

# The task role is what the containers' AWS SDK calls run as. Only ECS tasks of this account
# may assume it (confused-deputy protection).
data "aws_iam_policy_document" "task_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:ecs:${local.region}:${data.aws_caller_identity.current.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.task_assume.json
  tags               = var.tags
}

# db-sync's least-privilege policy, built from the same bucket and key that go into
# DB_S3_BUCKET and DB_S3_KEY, so the grant and the configuration cannot disagree.
module "db_sync_policy" {
  source = "../iam-policy"

  bucket_arn     = var.bucket_arn
  db_key         = var.db_key
  kms_key_arn    = var.kms_key_arn
  attach_to_role = true
  role_name      = aws_iam_role.task.name
  policy_name    = "db-sync"
}

resource "aws_iam_role_policy_attachment" "task_additional" {
  count = length(var.additional_task_role_policy_arns)

  role       = aws_iam_role.task.name
  policy_arn = var.additional_task_role_policy_arns[count.index]
}

# The execution role is what ECS itself uses to pull the images and write the logs.
data "aws_iam_policy_document" "execution_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.execution_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# --- Task definition ---------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  tags                     = var.tags

  # Two jsonencode calls rather than one over a conditional: the two lists have different
  # shapes, which a Terraform conditional cannot unify.
  container_definitions = var.mode == "sidecar" ? jsonencode(local.sidecar_container_definitions) : jsonencode(local.wrapper_container_definitions)

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # No host path and no EFS: a bind mount on the task's ephemeral storage, shared by the
  # containers that mount it and gone with the task. db-sync is what makes it durable.
  volume {
    name = local.volume_name
  }

  dynamic "ephemeral_storage" {
    for_each = var.ephemeral_storage_gib == null ? [] : [var.ephemeral_storage_gib]

    content {
      size_in_gib = ephemeral_storage.value
    }
  }

  lifecycle {
    precondition {
      condition     = var.mode == "wrapper" || var.db_sync_image != null
      error_message = "mode = \"sidecar\" needs db_sync_image."
    }

    precondition {
      condition     = var.mode == "sidecar" || var.app_command != null
      error_message = "mode = \"wrapper\" needs app_command: overriding the entry point drops the image's CMD."
    }

    precondition {
      condition     = length(setintersection(keys(var.app_environment), [for entry in concat(local.db_sync_environment, local.exec_environment) : entry.name])) == 0
      error_message = "app_environment must not set db-sync's own variables; use this module's variables for them."
    }

    precondition {
      condition     = var.mode == "sidecar" || var.app_stop_timeout_seconds + var.shutdown_timeout_seconds + local.stop_timeout_margin_seconds <= 120
      error_message = "In wrapper mode app_stop_timeout_seconds + shutdown_timeout_seconds + 10 must fit Fargate's 120 s stopTimeout."
    }
  }
}
