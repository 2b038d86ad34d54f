# Schedules (contract §4): the ingestor every few minutes, and a sweep that invokes the processor
# and the loader with a scheduled event (no S3 records), so a lost or failed S3 event delays
# data and never loses it.
locals {
  schedules = {
    ingest = {
      minutes     = var.ingest_interval_minutes
      description = "Starts an ingest run"
      targets     = ["ingest"]
    }
    sweep = {
      minutes     = var.sweep_interval_minutes
      description = "Sweeps up every manifest the processor and loader have not handled"
      targets     = ["process", "load"]
    }
  }

  schedule_targets = merge([
    for rule, schedule in local.schedules : {
      for stage in schedule.targets : stage => rule
    }
  ]...)
}

resource "aws_cloudwatch_event_rule" "schedule" {
  for_each = local.schedules

  name                = "${local.prefix}-${each.key}"
  description         = "${each.value.description} every ${each.value.minutes} minute(s)."
  schedule_expression = each.value.minutes == 1 ? "rate(1 minute)" : "rate(${each.value.minutes} minutes)"
  state               = var.schedules_enabled ? "ENABLED" : "DISABLED"
}

resource "aws_cloudwatch_event_target" "stage" {
  for_each = local.schedule_targets

  rule      = aws_cloudwatch_event_rule.schedule[each.value].name
  target_id = "${local.prefix}-${each.key}"
  arn       = aws_lambda_function.stage[each.key].arn
}

resource "aws_lambda_permission" "from_schedule" {
  for_each = local.schedule_targets

  statement_id  = "AllowScheduled${title(each.value)}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.stage[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule[each.value].arn
}
