# One role per function, each allowed exactly what its stage does (contract §4, design.md):
#   ingest : read its source secret; list, read and write the ingested bucket (runs, index); read
#            the landing bucket; write quarantine/ in the processed bucket (a bad FX API answer, a
#            courier file or its bad events: landing.tf)
#   process: list and read the ingested bucket; list, read and write the processed bucket
#   load   : list and read the processed bucket, list the ingested bucket, read the warehouse
#            secret, write only quarantine/ in the processed bucket
# and all three: write their own log group, send traces, send a failed event to the failed-events
# queue, use the pipeline's key.
data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "stage" {
  for_each = local.stages

  name               = "${local.prefix}-${each.key}"
  description        = "Runs the ${each.key} function of ${local.prefix}."
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

data "aws_iam_policy_document" "common" {
  for_each = local.stages

  statement {
    sid       = "OwnLogGroupOnly"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.stage[each.key].arn}:*"]
  }

  statement {
    sid       = "Traces"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"] # X-Ray has no resource-level permissions
  }

  # In a VPC (vpc_subnet_ids), what AWSLambdaVPCAccessExecutionRole grants, in this account and
  # region: Lambda creates and removes the functions' network interfaces with their role. The
  # Describe actions have no resource-level permissions.
  dynamic "statement" {
    for_each = local.in_vpc ? [1] : []
    content {
      sid = "VpcNetworkInterfaces"
      actions = ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses"]
      resources = ["arn:${local.partition}:ec2:${var.aws_region}:${local.account_id}:*"]
    }
  }

  dynamic "statement" {
    for_each = local.in_vpc ? [1] : []
    content {
      sid       = "VpcDescribe"
      actions   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
      resources = ["*"]
    }
  }

  # The on-failure destination of asynchronous invocations (lambda.tf): Lambda sends with the role.
  statement {
    sid       = "FailedEvents"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failed_events.arn]
  }

  statement {
    sid       = "PipelineKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.pipeline.arn]
  }
}

data "aws_iam_policy_document" "ingest" {
  source_policy_documents = [data.aws_iam_policy_document.ingest_landing.json] # courier files (landing.tf)

  statement {
    sid       = "ListIngested"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake["ingested"].arn]
  }

  # A CSV over 64 MB goes up in parts (adapters/s3.py); its upload is aborted when the complete
  # fails, e.g. with 412 on a rerun whose file already exists.
  statement {
    sid       = "ReadWriteIngested"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.lake["ingested"].arn}/*"]
  }

  statement {
    sid       = "SourceCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.source.arn]
  }
}

data "aws_iam_policy_document" "process" {
  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake["ingested"].arn, aws_s3_bucket.lake["processed"].arn]
  }

  statement {
    sid       = "ReadIngested"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.lake["ingested"].arn}/*"]
  }

  # Parquet over 64 MB goes up in parts, aborted when the complete fails (as for the ingest).
  statement {
    sid       = "ReadWriteProcessed"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.lake["processed"].arn}/*"]
  }

  # A run in parts: one asynchronous invocation of this same function per part (fanout.py). The ARN
  # is spelled out: naming the function resource would make a cycle (it depends on this policy).
  statement {
    sid       = "InvokeItselfForParts"
    actions   = ["lambda:InvokeFunction"]
    resources = ["arn:${local.partition}:lambda:${var.aws_region}:${local.account_id}:function:${local.prefix}-process"]
  }
}

data "aws_iam_policy_document" "load" {
  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake["ingested"].arn, aws_s3_bucket.lake["processed"].arn]
  }

  statement {
    sid       = "ReadProcessed"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.lake["processed"].arn}/*"]
  }

  statement {
    sid     = "WriteQuarantineAndFailures"
    actions = ["s3:PutObject"]
    resources = [
      "${aws_s3_bucket.lake["processed"].arn}/quarantine/*",
      "${aws_s3_bucket.lake["processed"].arn}/_state/failures/load/*",
    ]
  }

  # A quarantined file over 5 GiB is copied in parts (adapters/s3.py `copy_create_only`; s3:PutObject
  # covers UploadPartCopy), and that upload is aborted when its complete fails.
  statement {
    sid       = "AbortQuarantineCopies"
    actions   = ["s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.lake["processed"].arn}/quarantine/*"]
  }

  statement {
    sid       = "WarehouseCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.warehouse.arn]
  }

  # A run in parts: one asynchronous invocation of this same function per part to stage
  # (fanout.py, load/parts.py); the ARN is spelled out for the same reason as the processor's.
  statement {
    sid       = "InvokeItselfForParts"
    actions   = ["lambda:InvokeFunction"]
    resources = ["arn:${local.partition}:lambda:${var.aws_region}:${local.account_id}:function:${local.prefix}-load"]
  }
}

locals {
  stage_policies = {
    ingest  = data.aws_iam_policy_document.ingest.json
    process = data.aws_iam_policy_document.process.json
    load    = data.aws_iam_policy_document.load.json
  }
}

data "aws_iam_policy_document" "stage" {
  for_each = local.stages

  source_policy_documents = [data.aws_iam_policy_document.common[each.key].json, local.stage_policies[each.key]]
}

resource "aws_iam_role_policy" "stage" {
  for_each = local.stages

  name   = "${local.prefix}-${each.key}"
  role   = aws_iam_role.stage[each.key].id
  policy = data.aws_iam_policy_document.stage[each.key].json
}
