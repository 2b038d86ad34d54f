# The three stage functions (contract §1), all from one zip built by `make package`, plus the
# project's layer on top of the AWS SDK for pandas managed layer (pandas, pyarrow, pg8000): it
# adds pycountry, the loader's binary COPY encoder (pgpq) and the pinned boto3/botocore the tests
# ran with, which take precedence over the runtime's own copy (.ci/package.py says why). x86_64:
# pgpq's native code in the layer is built for it.
locals {
  function_zip = "${local.build_dir}/function.zip"
  layer_zip    = "${local.build_dir}/layer.zip"

  # Which stage a manifest landing in each bucket starts (s3.tf), and its reverse.
  next_stage    = { ingested = "process", processed = "load" }
  lake_triggers = { for bucket, stage in local.next_stage : stage => bucket }
}

resource "aws_lambda_layer_version" "dependencies" {
  layer_name               = "${local.prefix}-dependencies"
  description              = "pycountry, pgpq and the pinned boto3, botocore, s3transfer and jmespath (.ci/package.py)"
  filename                 = local.layer_zip
  source_code_hash         = filebase64sha256(local.layer_zip)
  compatible_runtimes      = [var.lambda_runtime]
  compatible_architectures = ["x86_64"]
}

resource "aws_cloudwatch_log_group" "stage" {
  for_each = local.stages

  name              = "/aws/lambda/${local.prefix}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

resource "aws_lambda_function" "stage" {
  for_each = local.stages

  #checkov:skip=CKV_AWS_116:A failed event goes to the on-failure destination (aws_lambda_function_event_invoke_config.stage, the failed-events queue), AWS's successor to a dead-letter queue; the scheduled sweep re-handles every unhandled manifest anyway (contract §4).
  #checkov:skip=CKV_AWS_117:A VPC is optional (vpc_subnet_ids, vpc_security_group_ids): the databases may be public RDS or elsewhere, and a VPC needs endpoints or a NAT per deployment (readme_files/deployment.md).
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile; the zip comes from the reviewed main branch through CI, and its hash is pinned by source_code_hash.
  #checkov:skip=CKV_AWS_115:Concurrency limits are per account (a new account cannot reserve any); stages are safe when concurrent (advisory lock, create-only writes), so no reservation is needed.
  function_name    = "${local.prefix}-${each.key}"
  description      = each.value.description
  role             = aws_iam_role.stage[each.key].arn
  handler          = each.value.handler
  runtime          = var.lambda_runtime
  architectures    = ["x86_64"]
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

  # contract §5: bucket names and the ids of the secrets (never their values).
  environment {
    variables = {
      TOTESYS_INGEST_BUCKET    = aws_s3_bucket.lake["ingested"].id
      TOTESYS_PROCESSED_BUCKET = aws_s3_bucket.lake["processed"].id
      TOTESYS_LANDING_BUCKET   = aws_s3_bucket.landing.id
      TOTESYS_SOURCE_SECRET    = aws_secretsmanager_secret.source.name
      TOTESYS_WAREHOUSE_SECRET = aws_secretsmanager_secret.warehouse.name
      TOTESYS_LOG_LEVEL        = var.log_level
      TOTESYS_FX_API_URL       = var.fx_api_url
      TOTESYS_SOURCE_MODE      = var.source_mode
      TOTESYS_CDC_MAX_LAG_MB   = tostring(var.cdc_max_lag_mb)
      TOTESYS_PART_ROWS        = tostring(var.part_rows)
      TOTESYS_WHOLE_RUN_ROWS   = tostring(var.whole_run_rows)
      # contract §4 "Parts": the processor hands a run's parts to invocations of its own function
      # (readme_files/adr/0006-parts.md); the others never fan out.
      TOTESYS_FANOUT = contains(local.fanout_stages, each.key) ? "lambda" : ""
    }
  }

  tracing_config {
    mode = "Active"
  }

  # Optional: private databases. The role then may manage the functions' network interfaces (iam.tf).
  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.vpc_subnet_ids
      security_group_ids = var.vpc_security_group_ids
    }
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

# Asynchronous invocations (the schedules and the S3 notifications) that fail. Lambda's default
# retries each twice over up to 6 hours, which only repeats the same failure (and its alarm
# mails): the next schedule, or the sweep for an S3 event, runs the work again anyway (contract §4).
# So retries and event age are set here, and an event that still fails is kept in a queue for
# inspection, never mailed (the failed-invocations alarm already says it happened).
resource "aws_sqs_queue" "failed_events" {
  name                      = "${local.prefix}-failed-events"
  message_retention_seconds = 1209600 # 14 days, SQS's longest
  kms_master_key_id         = aws_kms_key.pipeline.arn
}

resource "aws_lambda_function_event_invoke_config" "stage" {
  for_each = local.stages

  function_name                = aws_lambda_function.stage[each.key].function_name
  maximum_retry_attempts       = var.lambda_async_retries
  maximum_event_age_in_seconds = var.lambda_max_event_age_s

  destination_config {
    on_failure {
      destination = aws_sqs_queue.failed_events.arn
    }
  }
}
