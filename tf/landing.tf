# Courier files (contract §9): the landing bucket a partner writes to, at any time, under any name.
# Its ObjectCreated events invoke the ingest function, which takes each object as one run; the
# scheduled ingest sweeps up any whose event was lost. The pipeline only ever reads this bucket.
resource "aws_s3_bucket" "landing" {
  #checkov:skip=CKV_AWS_18:Access logging would need a third bucket for every deployment; CloudTrail data events are the audit trail where one is required.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage for every deployment; the partner can re-send, and what was taken is kept in the ingested bucket.
  #checkov:skip=CKV_AWS_145:A partner account writes here: SSE-KMS with the pipeline's key would need that key granted across accounts. S3-managed keys encrypt every object at rest without it.
  bucket        = "${local.prefix}-landing-${local.account_id}"
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket_ownership_controls" "landing" {
  bucket = aws_s3_bucket.landing.id
  rule {
    object_ownership = "BucketOwnerEnforced" # the partner's objects belong to this account
  }
}

resource "aws_s3_bucket_public_access_block" "landing" {
  bucket                  = aws_s3_bucket.landing.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "landing" {
  bucket = aws_s3_bucket.landing.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "landing" {
  bucket = aws_s3_bucket.landing.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Landed files expire once long taken (each is copied into the ingested bucket as its run's CSV),
# which also keeps the sweep's listing of this bucket short (ingest/courier.py).
resource "aws_s3_bucket_lifecycle_configuration" "landing" {
  bucket = aws_s3_bucket.landing.id

  rule {
    id     = "expire-taken-files"
    status = "Enabled"

    filter {}

    expiration {
      days = var.landing_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.landing_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.incomplete_upload_days
    }
  }
}

data "aws_iam_policy_document" "landing" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.landing.arn, "${aws_s3_bucket.landing.arn}/*"]

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

  # The partner's accounts or roles may put objects, nothing else (no read, list or delete).
  dynamic "statement" {
    for_each = length(var.landing_writer_arns) > 0 ? [1] : []
    content {
      sid       = "PartnerWrites"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.landing.arn}/*"]

      principals {
        type        = "AWS"
        identifiers = var.landing_writer_arns
      }
    }
  }
}

resource "aws_s3_bucket_policy" "landing" {
  bucket = aws_s3_bucket.landing.id
  policy = data.aws_iam_policy_document.landing.json

  depends_on = [aws_s3_bucket_public_access_block.landing]
}

resource "aws_lambda_permission" "from_landing" {
  statement_id   = "AllowCourierFileEventsFromLandingBucket"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.stage["ingest"].function_name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.landing.arn
  source_account = local.account_id
}

resource "aws_s3_bucket_notification" "landing" {
  bucket = aws_s3_bucket.landing.id

  lambda_function {
    id                  = "landing-file-to-ingest"
    lambda_function_arn = aws_lambda_function.stage["ingest"].arn
    events              = ["s3:ObjectCreated:*"]
  }

  depends_on = [aws_lambda_permission.from_landing]
}

# The ingest role (iam.tf takes these statements into its one policy) reads the landing bucket
# (list, and get: a missing key then answers 404, not 403) and writes what it holds back into the
# processed bucket's quarantine/ (a HEAD there first: the copy is create-only): a courier file or its
# bad events, and a bad FX API answer (ingest/fx.py).
data "aws_iam_policy_document" "ingest_landing" {
  statement {
    sid       = "ReadLanding"
    actions   = ["s3:ListBucket", "s3:GetObject"]
    resources = [aws_s3_bucket.landing.arn, "${aws_s3_bucket.landing.arn}/*"]
  }

  statement {
    sid       = "ListProcessed"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake["processed"].arn]
  }

  statement {
    sid       = "QuarantineFromIngest"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.lake["processed"].arn}/quarantine/*"]
  }
}
