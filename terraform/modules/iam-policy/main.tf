# Least-privilege policy for db-sync: one bucket, one key and its KEY.* siblings, nothing else.
# terraform/README.md explains why each action is needed.

locals {
  object_arns = [
    "${var.bucket_arn}/${var.db_key}",
    # KEY.backup.YYYYMMDD_HHMMSS (final upload on SIGTERM), KEY.lease, KEY.lease.probe.*,
    # KEY.conflict.* and the continuous-replication objects under KEY.db-sync/ ("*" spans "/").
    "${var.bucket_arn}/${var.db_key}.*",
  ]
}

data "aws_iam_policy_document" "this" {
  # Read, write and delete the database object and its siblings. No s3:DeleteObjectVersion:
  # a DeleteObject in a versioned bucket only adds a delete marker, so db-sync can prune
  # backups and release its lease but can never destroy history; the lifecycle rules do that.
  # Multipart uploads (large databases) need only s3:PutObject to create, upload parts and
  # complete; aborting is a separate action. db-sync never lists an upload's parts
  # (s3:ListMultipartUploadParts): it aborts a failed upload rather than resume it.
  statement {
    sid    = "DatabaseObjects"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
    ]
    resources = local.object_arns
  }

  # List the key's versions (restore a point in time, find backups) and the key's siblings,
  # but only under the key's own prefix: a listing of the whole bucket is denied.
  statement {
    sid       = "ListDatabaseKeys"
    effect    = "Allow"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.db_key, "${var.db_key}.*"]
    }
  }

  # Find multipart uploads left behind by a killed task (to abort them), and check at start
  # that versioning is on, since restore-by-version depends on it.
  statement {
    sid       = "BucketState"
    effect    = "Allow"
    actions   = ["s3:ListBucketMultipartUploads", "s3:GetBucketVersioning"]
    resources = [var.bucket_arn]
  }

  # SSE-KMS: GenerateDataKey to upload, Decrypt to download and to complete a multipart
  # upload. On the bucket's key only.
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "DatabaseEncryptionKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  count = var.attach_to_role ? 1 : 0

  name   = var.policy_name
  role   = var.role_name
  policy = data.aws_iam_policy_document.this.json

  lifecycle {
    precondition {
      condition     = var.role_name != null
      error_message = "attach_to_role is true but role_name is not set."
    }
  }
}
