variable "bucket_name" {
  description = "Name of the S3 bucket that holds the database (DB_S3_BUCKET). Bucket names are global: include an account or environment suffix."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 characters of lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit."
  }
}

variable "kms_key_arn" {
  description = "ARN of a customer-managed KMS key for SSE-KMS default encryption. Null (the default) uses SSE-S3 (AES256), which needs no KMS permissions and costs nothing extra."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID) or null."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after an upload is replaced (becomes noncurrent) before S3 may delete that version. This is the restore window: any snapshot from the last N days can be restored. Every day kept costs one day of uploads in storage (see terraform/README.md)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_versions_to_keep" {
  description = "Newest noncurrent versions of each key that S3 keeps even after noncurrent_version_expiration_days (NewerNoncurrentVersions). A version is deleted only when it is older than the expiration days AND this many newer noncurrent versions exist, so a rarely written database still keeps its last M versions. S3 allows at most 100."
  type        = number
  default     = 50

  validation {
    condition     = var.noncurrent_versions_to_keep >= 1 && var.noncurrent_versions_to_keep <= 100 && floor(var.noncurrent_versions_to_keep) == var.noncurrent_versions_to_keep
    error_message = "noncurrent_versions_to_keep must be a whole number from 1 to 100 (the S3 limit)."
  }
}

variable "conflict_expiration_days" {
  description = "Days a KEY.conflict.* copy (a local database that diverged from the store, kept for a human to compare) stays before S3 expires it."
  type        = number
  default     = 30

  validation {
    condition     = var.conflict_expiration_days >= 1 && floor(var.conflict_expiration_days) == var.conflict_expiration_days
    error_message = "conflict_expiration_days must be a whole number of days, at least 1."
  }
}

variable "db_keys" {
  description = "DB_S3_KEY of every database stored in this bucket. Used to scope the lifecycle rules of the keys db-sync writes next to each: KEY.backup.*, KEY.lease, KEY.lease.probe.*, KEY.conflict.* and KEY.db-sync/; see main.tf."
  type        = list(string)
  default     = ["db.sqlite3"]

  validation {
    condition     = length(var.db_keys) > 0 && alltrue([for key in var.db_keys : length(key) > 0 && !startswith(key, "/")])
    error_message = "db_keys must list at least one non-empty key, none starting with \"/\"."
  }
}

variable "enforce_tls" {
  description = "Attach a bucket policy that denies every request not made over TLS (aws:SecureTransport = false)."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a bucket that still holds objects and versions. Keep false for real data: it deletes every backup."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to the bucket."
  type        = map(string)
  default     = {}
}
