variable "bucket_arn" {
  description = "ARN of the bucket that holds the database (arn:aws:s3:::NAME), e.g. the bucket module's bucket_arn output."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_arn))
    error_message = "bucket_arn must be the ARN of one bucket (arn:aws:s3:::NAME), without a key or wildcard."
  }
}

variable "db_key" {
  description = "Object key of the database (DB_S3_KEY). The policy covers exactly this key and KEY.* (KEY.backup.*, KEY.lease, KEY.conflict.*)."
  type        = string
  default     = "db.sqlite3"

  validation {
    # IAM reads * and ? in a resource as wildcards and ${...} as a policy variable; a key
    # containing them would silently widen (or break) the grant.
    condition     = length(var.db_key) > 0 && !startswith(var.db_key, "/") && !endswith(var.db_key, "/") && !can(regex("[*?$]", var.db_key))
    error_message = "db_key must be a non-empty object key that neither starts nor ends with \"/\" and contains no *, ? or $."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the bucket (SSE-KMS), or null for SSE-S3. When set, the policy allows kms:Decrypt and kms:GenerateDataKey on this key only."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of one KMS key (arn:aws:kms:REGION:ACCOUNT:key/ID), not an alias, or null."
  }
}

variable "attach_to_role" {
  description = "Attach the policy to role_name as an inline role policy. A plain bool (not role_name != null) so that the count is known at plan time even when the role is created in the same apply."
  type        = bool
  default     = false
}

variable "role_name" {
  description = "Name of the IAM role (the ECS task role) to attach the policy to when attach_to_role is true."
  type        = string
  default     = null
}

variable "policy_name" {
  description = "Name of the inline role policy."
  type        = string
  default     = "db-sync"
}
