# Alarms (contract §6): the functions log JSON lines with level, stage, run_id, message and, on
# ERROR, error_kind. Metric filters count ERROR lines per stage and per error_kind; Lambda's
# own metrics catch what never reaches a log line (a timeout, running out of memory) and a
# silent ingestor. Every alarm mails the subscribers of one SNS topic when it fires; only the
# silence alarm also mails when it clears.
resource "aws_sns_topic" "alarms" {
  name              = "${local.prefix}-alarms"
  kms_master_key_id = aws_kms_key.pipeline.id
}

resource "aws_sns_topic_subscription" "alarm_email" {
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

# Every ERROR line of a stage, whatever its kind.
resource "aws_cloudwatch_log_metric_filter" "stage_errors" {
  for_each = local.stages

  name           = "${local.prefix}-${each.key}-errors"
  log_group_name = aws_cloudwatch_log_group.stage[each.key].name
  pattern        = "{ $.level = \"ERROR\" }"

  metric_transformation {
    name          = "${each.key}_errors"
    namespace     = local.metric_namespace
    value         = "1"
    default_value = "0"
  }
}

# The same lines counted per error_kind, across stages: one metric per kind (the dimension).
resource "aws_cloudwatch_log_metric_filter" "error_kinds" {
  for_each = local.stages

  name           = "${local.prefix}-${each.key}-error-kinds"
  log_group_name = aws_cloudwatch_log_group.stage[each.key].name
  pattern        = "{ $.level = \"ERROR\" }"

  metric_transformation {
    name      = "errors_by_kind"
    namespace = local.metric_namespace
    value     = "1"
    unit      = "Count"
    dimensions = {
      error_kind = "$.error_kind"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "stage_errors" {
  for_each = local.stages

  alarm_name          = "${local.prefix}-${each.key}-errors"
  alarm_description   = "The ${each.key} stage logged an ERROR line; its error_kind alarm says which failure."
  namespace           = local.metric_namespace
  metric_name         = aws_cloudwatch_log_metric_filter.stage_errors[each.key].metric_transformation[0].name
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "error_kind" {
  for_each = toset(local.error_kinds)

  alarm_name          = "${local.prefix}-error-${each.key}"
  alarm_description   = "A stage logged an ERROR line with error_kind=${each.key}."
  namespace           = local.metric_namespace
  metric_name         = "errors_by_kind"
  dimensions          = { error_kind = each.key }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]

  depends_on = [aws_cloudwatch_log_metric_filter.error_kinds]
}

# A function that failed without an ERROR line: a timeout, out of memory, an import error.
resource "aws_cloudwatch_metric_alarm" "failed_invocations" {
  for_each = local.stages

  alarm_name          = "${local.prefix}-${each.key}-failed-invocations"
  alarm_description   = "The ${each.key} function failed an invocation (including timeouts and crashes that log nothing)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.stage[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
}

# Silence: no successful ingest run (invocations minus failures) in two schedule intervals,
# e.g. the schedule was disabled, the function cannot start, or every run fails.
resource "aws_cloudwatch_metric_alarm" "ingest_silent" {
  alarm_name          = "${local.prefix}-ingest-silent"
  alarm_description   = "No successful ingest run in two intervals of ${var.ingest_interval_minutes} minute(s)."
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  # The one alarm whose end is news (the pipeline runs again); the others clear silently.
  ok_actions = [aws_sns_topic.alarms.arn]

  metric_query {
    id          = "successes"
    expression  = "FILL(invocations, 0) - FILL(failures, 0)"
    label       = "Successful ingest runs"
    return_data = true
  }

  metric_query {
    id = "invocations"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Invocations"
      dimensions  = { FunctionName = aws_lambda_function.stage["ingest"].function_name }
      stat        = "Sum"
      period      = var.ingest_interval_minutes * 60
    }
  }

  metric_query {
    id = "failures"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.stage["ingest"].function_name }
      stat        = "Sum"
      period      = var.ingest_interval_minutes * 60
    }
  }
}
