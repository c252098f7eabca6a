variable "region" {
  description = "AWS region of the bucket, the cluster and the task."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the application: task family, service, cluster, roles and log group."
  type        = string
  default     = "notes"
}

variable "bucket_name" {
  description = "Globally unique name of the bucket that keeps the database."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the bucket, or null for SSE-S3."
  type        = string
  default     = null
}

variable "mode" {
  description = "\"sidecar\" (app + db-sync containers) or \"wrapper\" (one container running `db-sync exec -- <app command>`)."
  type        = string
  default     = "sidecar"
}

variable "app_image" {
  description = "Image of the application (in wrapper mode it must contain db-sync)."
  type        = string
}

variable "app_command" {
  description = "Command of the application; required in wrapper mode."
  type        = list(string)
  default     = null
}

variable "app_port" {
  description = "Port the application listens on, or null."
  type        = number
  default     = 8080
}

variable "db_sync_image" {
  description = "Image of db-sync, for the sidecar (sidecar mode only)."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets of the service's tasks. They need a route to S3 (a NAT gateway, a public IP, or an S3 gateway endpoint, which is the cheapest)."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the service's tasks."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give the task a public IP (public subnets without a NAT gateway)."
  type        = bool
  default     = false
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified when db-sync's last successful sync gets too old, and when it recovers."
  type        = list(string)
  default     = []
}
