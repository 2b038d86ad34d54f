# The lake (contract §4): the ingested bucket (CSV) and the processed bucket (Parquet). Objects are
# written create-only and never changed, so versioning only guards against deletes.
resource "aws_s3_bucket" "lake" {
  for_each = local.buckets

  #checkov:skip=CKV_AWS_18:Access logging would need a third bucket for every deployment; CloudTrail data events are the audit trail where one is required.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage for every deployment; versioning guards against deletes, and a second region is a per-deployment disaster-recovery choice.
  bucket        = each.value
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  for_each = aws_s3_bucket.lake

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.pipeline.arn
    }
    bucket_key_enabled = true
  }
}

# Lake objects are the pipeline's history and never expire (nothing is overwritten, so there are
# no noncurrent versions to age out). The one rule removes the parts of multipart uploads that never
# completed: a function that timed out mid-upload, or an abort that failed after a 412
# (adapters/s3.py); such parts are invisible to listings but billed until removed.
resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.incomplete_upload_days
    }
  }
}

# Only TLS: a request over plain HTTP is refused whoever makes it.
data "aws_iam_policy_document" "lake_tls_only" {
  for_each = aws_s3_bucket.lake

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]

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

resource "aws_s3_bucket_policy" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  policy = data.aws_iam_policy_document.lake_tls_only[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.lake]
}

# A manifest landing under _runs/ starts the next stage (contract §4): ingested -> processor,
# processed -> loader. The schedules in events.tf sweep up anything whose event was lost.
resource "aws_s3_bucket_notification" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id

  lambda_function {
    id                  = "${each.key}-manifest-to-${local.next_stage[each.key]}"
    lambda_function_arn = aws_lambda_function.stage[local.next_stage[each.key]].arn
    events              = ["s3:ObjectCreated:*"]
    filter_prefix       = "_runs/"
    filter_suffix       = ".json"
  }

  depends_on = [aws_lambda_permission.from_lake]
}
