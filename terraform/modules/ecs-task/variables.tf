variable "name" {
  description = "Task definition family; also names the IAM roles and the log group (/ecs/NAME)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,50}$", var.name))
    error_message = "name must be 1-50 letters, digits, hyphens or underscores (it prefixes IAM role names, which are limited to 64 characters)."
  }
}

variable "mode" {
  description = "\"sidecar\": the app container plus a db-sync container sharing the database volume. \"wrapper\": one container whose image contains db-sync and runs the app under `db-sync exec -- <app command>`."
  type        = string
  default     = "sidecar"

  validation {
    condition     = contains(["sidecar", "wrapper"], var.mode)
    error_message = "mode must be \"sidecar\" or \"wrapper\"."
  }
}

# --- The application ---------------------------------------------------------------------

variable "app_container_name" {
  description = "Name of the application container."
  type        = string
  default     = "app"

  validation {
    condition     = var.app_container_name != "db-sync"
    error_message = "app_container_name must differ from the sidecar's name, \"db-sync\"."
  }
}

variable "app_image" {
  description = "Image of the application. In wrapper mode it must also contain db-sync (on PATH)."
  type        = string
}

variable "app_command" {
  description = "Command of the application container. Null keeps the image's CMD in sidecar mode; required in wrapper mode, where it becomes the arguments after `db-sync exec --`."
  type        = list(string)
  default     = null
}

variable "app_port" {
  description = "Port the application listens on (TCP), or null for none."
  type        = number
  default     = null
}

variable "app_environment" {
  description = "Environment variables of the application itself. In wrapper mode they are added to db-sync's own, and must not reuse their names."
  type        = map(string)
  default     = {}
}

variable "app_stop_timeout_seconds" {
  description = "Seconds ECS waits for the app to exit after SIGTERM before it kills it. The db-sync sidecar is stopped only after the app is gone, so its final snapshot sees the app's last writes."
  type        = number
  default     = 30

  validation {
    condition     = var.app_stop_timeout_seconds >= 2 && var.app_stop_timeout_seconds <= 120
    error_message = "app_stop_timeout_seconds must be between 2 and 120 (the Fargate maximum)."
  }
}

# --- db-sync -----------------------------------------------------------------------------

variable "db_sync_image" {
  description = "Image of the db-sync sidecar (sidecar mode; required there). Ignored in wrapper mode."
  type        = string
  default     = null
}

variable "db_sync_command" {
  description = "Arguments of db-sync in the sidecar (the entry point is `db-sync`)."
  type        = list(string)
  default     = ["run"]
}

variable "wrapper_entrypoint" {
  description = "Entry point of the single container in wrapper mode; app_command follows it. Use [\"entrypoint.sh\"] for the script shipped with db-sync, if the image uses it."
  type        = list(string)
  default     = ["db-sync", "exec", "--"]
}

variable "bucket_name" {
  description = "Bucket holding the database (DB_S3_BUCKET)."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of that bucket, for the task role policy."
  type        = string
}

variable "bucket_region" {
  description = "Region of the bucket (DB_S3_REGION). Null means the provider's region."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the bucket (SSE-KMS), or null for SSE-S3."
  type        = string
  default     = null
}

variable "db_key" {
  description = "Object key of the database (DB_S3_KEY). The same value scopes the task role policy, so the two cannot drift apart."
  type        = string
  default     = "db.sqlite3"
}

variable "db_directory" {
  description = "Directory of the database inside the containers, where the shared task-storage volume is mounted. Not /app: the volume would hide the application's own files there."
  type        = string
  default     = "/data"

  validation {
    condition     = startswith(var.db_directory, "/") && !endswith(var.db_directory, "/")
    error_message = "db_directory must be an absolute path other than \"/\", without a trailing slash."
  }
}

variable "db_filename" {
  description = "File name of the database inside db_directory (DB_LOCAL_PATH = db_directory/db_filename)."
  type        = string
  default     = "db.sqlite3"

  validation {
    condition     = length(var.db_filename) > 0 && !strcontains(var.db_filename, "/")
    error_message = "db_filename must be a file name, without \"/\"."
  }
}

variable "sync_interval" {
  description = "How often db-sync looks for changes and uploads a snapshot (DB_SYNC_INTERVAL): seconds, or 30s, 5m, 1h."
  type        = string
  default     = "5m"
}

variable "health_port" {
  description = "Port of db-sync's health server (DB_SYNC_HEALTH_PORT), probed by `db-sync health` on 127.0.0.1 inside the container."
  type        = number
  default     = 8790

  validation {
    condition     = var.health_port >= 1 && var.health_port <= 65535
    error_message = "health_port must be 1-65535; the ECS health check needs the health server."
  }
}

variable "integrity_check" {
  description = "Integrity check on every snapshot and restore (DB_SYNC_INTEGRITY_CHECK): quick, full or none."
  type        = string
  default     = "quick"

  validation {
    condition     = contains(["quick", "full", "none"], var.integrity_check)
    error_message = "integrity_check must be quick, full or none."
  }
}

variable "cloudwatch_metrics" {
  description = "Write db-sync's key metrics (sync age, data at risk, failures, bytes uploaded, restore duration, lease) as CloudWatch Embedded Metric Format lines in its log stream (DB_SYNC_CLOUDWATCH_METRICS): awslogs turns them into metrics, with no agent and no extra IAM."
  type        = bool
  default     = true
}

variable "cloudwatch_namespace" {
  description = "CloudWatch namespace of those metrics (DB_SYNC_CLOUDWATCH_NAMESPACE)."
  type        = string
  default     = "db-sync"
}

variable "lease_mode" {
  description = "Single-writer lease (DB_SYNC_LEASE): required, auto or off. AWS S3 enforces the conditional writes the lease needs, so `required` makes a new task wait for the old one's final upload during a deployment, and refuses to start if the lease cannot be enforced."
  type        = string
  default     = "required"

  validation {
    condition     = contains(["required", "auto", "off"], var.lease_mode)
    error_message = "lease_mode must be required, auto or off."
  }
}

variable "log_level" {
  description = "db-sync log level (LOG_LEVEL): trace, debug, info, warn, error, fatal or silent."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["trace", "debug", "info", "warn", "error", "fatal", "silent"], var.log_level)
    error_message = "log_level must be trace, debug, info, warn, error, fatal or silent."
  }
}

variable "shutdown_timeout_seconds" {
  description = "db-sync's deadline for the final snapshot and upload after SIGTERM (DB_SYNC_SHUTDOWN_TIMEOUT). The container's stopTimeout is this plus a margin, so ECS never kills db-sync mid-upload. At most 110: Fargate allows a stopTimeout of 120."
  type        = number
  default     = 20

  validation {
    condition     = var.shutdown_timeout_seconds >= 1 && var.shutdown_timeout_seconds <= 110 && floor(var.shutdown_timeout_seconds) == var.shutdown_timeout_seconds
    error_message = "shutdown_timeout_seconds must be a whole number from 1 to 110."
  }
}

# --- Health check of db-sync (`db-sync health`) ------------------------------------------

variable "health_check_interval_seconds" {
  description = "Seconds between runs of `db-sync health`."
  type        = number
  default     = 10

  validation {
    condition     = var.health_check_interval_seconds >= 5 && var.health_check_interval_seconds <= 300
    error_message = "health_check_interval_seconds must be between 5 and 300 (ECS limits)."
  }
}

variable "health_check_timeout_seconds" {
  description = "Seconds one run of `db-sync health` may take before it counts as a failure."
  type        = number
  default     = 5

  validation {
    condition     = var.health_check_timeout_seconds >= 2 && var.health_check_timeout_seconds <= 60
    error_message = "health_check_timeout_seconds must be between 2 and 60 (ECS limits)."
  }
}

variable "health_check_retries" {
  description = "Consecutive failures (after the start period) before the container is UNHEALTHY."
  type        = number
  default     = 3

  validation {
    condition     = var.health_check_retries >= 1 && var.health_check_retries <= 10
    error_message = "health_check_retries must be between 1 and 10 (ECS limits)."
  }
}

variable "health_check_start_period_seconds" {
  description = "Grace period for the restore: failures during it do not count. Raise it for large databases: db-sync turns healthy only after it has downloaded and checked the whole file."
  type        = number
  default     = 60

  validation {
    condition     = var.health_check_start_period_seconds >= 0 && var.health_check_start_period_seconds <= 300
    error_message = "health_check_start_period_seconds must be between 0 and 300 (ECS limits)."
  }
}

# --- Task --------------------------------------------------------------------------------

variable "task_cpu" {
  description = "Task CPU units (Fargate sizes: 256, 512, 1024, ...)."
  type        = number
  default     = 256
}

variable "task_memory" {
  description = "Task memory in MiB (must fit task_cpu's Fargate size)."
  type        = number
  default     = 512
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64; the images must match."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "ephemeral_storage_gib" {
  description = "Task storage in GiB (21-200), or null for Fargate's default 20 GiB. It holds the images' writable layers and the database volume: size it for the database, its WAL, and one snapshot copy."
  type        = number
  default     = null

  validation {
    condition     = var.ephemeral_storage_gib == null || (coalesce(var.ephemeral_storage_gib, 21) >= 21 && coalesce(var.ephemeral_storage_gib, 21) <= 200)
    error_message = "ephemeral_storage_gib must be between 21 and 200, or null."
  }
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group."
  type        = number
  default     = 30
}

variable "additional_task_role_policy_arns" {
  description = "Managed policies for the application's own AWS access, attached to the task role next to db-sync's policy."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
