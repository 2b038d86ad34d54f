output "ingested_bucket" {
  description = "Name of the ingested bucket (TOTESYS_INGEST_BUCKET)."
  value       = aws_s3_bucket.lake["ingested"].id
}

output "processed_bucket" {
  description = "Name of the processed bucket (TOTESYS_PROCESSED_BUCKET)."
  value       = aws_s3_bucket.lake["processed"].id
}

output "function_names" {
  description = "Lambda function name per stage (ingest, process, load)."
  value       = { for stage, fn in aws_lambda_function.stage : stage => fn.function_name }
}

output "source_secret_arn" {
  description = "ARN of the source credentials secret: put its JSON value after the first apply."
  value       = aws_secretsmanager_secret.source.arn
}

output "warehouse_secret_arn" {
  description = "ARN of the warehouse credentials secret: put its JSON value after the first apply."
  value       = aws_secretsmanager_secret.warehouse.arn
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm publishes to."
  value       = aws_sns_topic.alarms.arn
}

output "glue_database" {
  description = "Glue database that registers the processed lake's tables for Athena."
  value       = aws_glue_catalog_database.lake.name
}

output "kms_key_arn" {
  description = "Customer-managed key encrypting the lake, secrets, logs and alarm topic (grant Athena users kms:Decrypt)."
  value       = aws_kms_key.pipeline.arn
}

output "failed_events_queue_url" {
  description = "SQS queue holding asynchronous events that failed after their retries (14 days)."
  value       = aws_sqs_queue.failed_events.url
}

output "landing_bucket" {
  description = "Name of the landing bucket couriers drop files into (TOTESYS_LANDING_BUCKET)."
  value       = aws_s3_bucket.landing.id
}
