output "bucket_name" {
  description = "Name of the bucket; pass it to db-sync as DB_S3_BUCKET."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the bucket, for IAM policies (modules/iam-policy)."
  value       = aws_s3_bucket.this.arn
}

output "bucket_region" {
  description = "Region the bucket lives in; pass it to db-sync as DB_S3_REGION."
  value       = aws_s3_bucket.this.region
}

output "kms_key_arn" {
  description = "KMS key used for default encryption, or null for SSE-S3. The task role needs kms:Decrypt and kms:GenerateDataKey on it."
  value       = var.kms_key_arn
}
