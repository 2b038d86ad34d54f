# The three stage functions (SPEC §1), all from one zip built by `make package`, plus a small
# layer (pycountry) on top of the AWS SDK for pandas managed layer, which ships pandas,
# pyarrow, awswrangler and pg8000 (boto3 comes with the runtime).
locals {
  function_zip = "${local.build_dir}/function.zip"
  layer_zip    = "${local.build_dir}/layer.zip"

  # Which stage a manifest landing in each bucket starts (s3.tf), and its reverse.
  next_stage    = { ingested = "process", processed = "load" }
  lake_triggers = { for bucket, stage in local.next_stage : stage => bucket }
}

resource "aws_lambda_layer_version" "dependencies" {
  layer_name          = "${local.prefix}-dependencies"
  description         = "pycountry, the one runtime package the AWS SDK for pandas layer lacks"
  filename            = local.layer_zip
  source_code_hash    = filebase64sha256(local.layer_zip)
  compatible_runtimes = [var.lambda_runtime]
}

resource "aws_cloudwatch_log_group" "stage" {
  for_each = local.stages

  name              = "/aws/lambda/${local.prefix}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

resource "aws_lambda_function" "stage" {
  for_each = local.stages

  #checkov:skip=CKV_AWS_116:No dead-letter queue: a failed S3 event is never lost work, since the scheduled sweep re-handles every unhandled manifest (SPEC §4) and the failure raises an alarm.
  #checkov:skip=CKV_AWS_117:The functions reach the source and warehouse wherever they are; a VPC (with NAT or endpoints for S3, Secrets Manager and Logs) is a per-deployment network choice.
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile; the zip comes from the reviewed main branch through CI, and its hash is pinned by source_code_hash.
  #checkov:skip=CKV_AWS_115:Concurrency limits are per account (a new account cannot reserve any); stages are safe when concurrent (advisory lock, create-only writes), so no reservation is needed.
  function_name    = "${local.prefix}-${each.key}"
  description      = each.value.description
  role             = aws_iam_role.stage[each.key].arn
  handler          = each.value.handler
  runtime          = var.lambda_runtime
  filename         = local.function_zip
  source_code_hash = filebase64sha256(local.function_zip)
  layers           = compact([var.aws_sdk_pandas_layer_arn, aws_lambda_layer_version.dependencies.arn])
  memory_size      = var.lambda_memory_mb[each.key]
  timeout          = var.lambda_timeout_s[each.key]
  kms_key_arn      = aws_kms_key.pipeline.arn

  # /tmp sized from the measured peak (readme_files/benchmarks.md); Lambda's default is 512 MB.
  ephemeral_storage {
    size = var.lambda_ephemeral_storage_mb[each.key]
  }

  # SPEC §5: bucket names and the ids of the secrets (never their values).
  environment {
    variables = {
      TOTESYS_INGEST_BUCKET    = aws_s3_bucket.lake["ingested"].id
      TOTESYS_PROCESSED_BUCKET = aws_s3_bucket.lake["processed"].id
      TOTESYS_SOURCE_SECRET    = aws_secretsmanager_secret.source.name
      TOTESYS_WAREHOUSE_SECRET = aws_secretsmanager_secret.warehouse.name
      TOTESYS_LOG_LEVEL        = var.log_level
    }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.stage, aws_iam_role_policy.stage]
}

resource "aws_lambda_permission" "from_lake" {
  for_each = local.lake_triggers

  statement_id   = "AllowManifestEventsFrom${title(each.value)}Bucket"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.stage[each.key].function_name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.lake[each.value].arn
  source_account = local.account_id
}
