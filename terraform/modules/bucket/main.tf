# The S3 bucket that keeps a db-sync database durable.
#
# db-sync overwrites one key (DB_S3_KEY) with a fresh snapshot whenever the database changed,
# and relies on bucket versioning to keep the older snapshots restorable. A versioned bucket
# bills every version it keeps: a 100 MB database uploaded every 5 minutes adds
# 100 MB x 288 uploads = 28.8 GB of noncurrent versions per day, forever, unless a lifecycle
# rule expires them. The lifecycle rules below are therefore not optional housekeeping; they
# are what bounds the bill. terraform/README.md has the full arithmetic.

resource "aws_s3_bucket" "this" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

# Versioning is the history: every upload of DB_S3_KEY becomes a new version, and the previous
# one stays restorable by its version id until the lifecycle rules below expire it. It also
# turns an accidental overwrite or delete into something that can be undone.
resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

# SSE-S3 (AES256) by default. With a KMS key, SSE-KMS with an S3 bucket key, which cuts the
# KMS requests (and their cost) from one per object operation to roughly one per bucket key
# period.
resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    bucket_key_enabled = var.kms_key_arn != null

    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
  }
}

# A database is never public. All four settings on, so neither an ACL nor a bucket policy can
# ever expose it, whatever is attached later.
resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs disabled: the bucket owner owns every object, and access is decided by IAM and the
# bucket policy alone.
resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # Noncurrent-version rules only mean something once versioning is on.
  depends_on = [aws_s3_bucket_versioning.this]

  # Bounds the cost of versioning. A replaced snapshot is deleted once it has been noncurrent
  # for noncurrent_version_expiration_days AND at least noncurrent_versions_to_keep newer
  # noncurrent versions exist: a busy database keeps N days of history, a quiet one keeps its
  # last M versions however old they are.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days           = var.noncurrent_version_expiration_days
      newer_noncurrent_versions = var.noncurrent_versions_to_keep
    }
  }

  # The floor above is counted per key, and a timestamped backup (KEY.backup.YYYYMMDD_HHMMSS)
  # has exactly one version: once db-sync's retention deletes it, that version is noncurrent
  # with no newer noncurrent versions, so the floor would keep it forever. This rule expires
  # pruned backups after the same number of days, without the floor. When two expiration
  # rules overlap, S3 honours the shorter one, so this rule wins for backup keys.
  dynamic "rule" {
    for_each = { for index, key in var.db_keys : tostring(index) => key }

    content {
      id     = "expire-pruned-backups-${rule.key}"
      status = "Enabled"

      filter {
        prefix = "${rule.value}.backup."
      }

      noncurrent_version_expiration {
        noncurrent_days = var.noncurrent_version_expiration_days
      }
    }
  }

  # The lease (KEY.lease, and the KEY.lease.probe.* objects of its start-up check) is rewritten
  # every TTL/3, 10 s by default: in a versioned bucket that is ~8,600 versions a day. They are
  # worth nothing once replaced, so they go after a day, without the floor of the first rule.
  # (An unversioned lease bucket, DB_SYNC_LEASE_BUCKET, avoids them altogether.)
  dynamic "rule" {
    for_each = { for index, key in var.db_keys : tostring(index) => key }

    content {
      id     = "expire-lease-versions-${rule.key}"
      status = "Enabled"

      filter {
        prefix = "${rule.value}.lease"
      }

      noncurrent_version_expiration {
        noncurrent_days = 1
      }
    }
  }

  # A lease probe object is deleted right after the check; one whose delete failed (S3 error,
  # stop signal) would stay forever. No probe lives longer than a few seconds.
  dynamic "rule" {
    for_each = { for index, key in var.db_keys : tostring(index) => key }

    content {
      id     = "expire-lease-probes-${rule.key}"
      status = "Enabled"

      filter {
        prefix = "${rule.value}.lease.probe."
      }

      expiration {
        days = 1
      }
    }
  }

  # KEY.conflict.* holds a local database that diverged from the store, kept for a human to
  # compare (db-sync refused to start). Each restart in that state writes another full copy, so
  # they expire: after conflict_expiration_days as current objects, then like any replaced version.
  dynamic "rule" {
    for_each = { for index, key in var.db_keys : tostring(index) => key }

    content {
      id     = "expire-conflict-copies-${rule.key}"
      status = "Enabled"

      filter {
        prefix = "${rule.value}.conflict."
      }

      expiration {
        days = var.conflict_expiration_days
      }

      noncurrent_version_expiration {
        noncurrent_days = var.noncurrent_version_expiration_days
      }
    }
  }

  # Continuous replication writes its segments under KEY.db-sync/ (each object once) and needs
  # them only for the point-in-time window: they expire after it, like the versions of KEY.
  dynamic "rule" {
    for_each = { for index, key in var.db_keys : tostring(index) => key }

    content {
      id     = "expire-replication-objects-${rule.key}"
      status = "Enabled"

      filter {
        prefix = "${rule.value}.db-sync/"
      }

      expiration {
        days = var.noncurrent_version_expiration_days
      }

      noncurrent_version_expiration {
        noncurrent_days = 1
      }
    }
  }

  # A multipart upload that never completes (task killed mid-upload) leaves parts that are
  # billed but invisible in listings. db-sync aborts its own failed uploads; this rule catches
  # the ones it never got the chance to abort.
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # When db-sync prunes an old KEY.backup.* object it leaves a delete marker; once the last
  # noncurrent version behind it has expired, the marker is alone ("expired") and only slows
  # down version listings. Remove it.
  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"

    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  count = var.enforce_tls ? 1 : 0

  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.tls_only.json

  # S3 rejects concurrent configuration changes on one bucket; put the policy after the
  # public access block so the two never race.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
