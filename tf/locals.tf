locals {
  # One name prefix for everything this configuration creates.
  prefix     = "${var.project}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  build_dir  = coalesce(var.build_dir, "${path.module}/../build")

  tags = merge(var.tags, {
    Project     = var.project
    Environment = var.environment
  })

  # The lake: S3 bucket names are global, so the account id makes them unique.
  buckets = {
    ingested  = "${local.prefix}-ingested-${local.account_id}"
    processed = "${local.prefix}-processed-${local.account_id}"
  }

  # The three stages (contract §1). Everything per stage (function, role, log group, alarms) is
  # declared once with for_each over this map.
  stages = {
    ingest = {
      handler     = "totesys_etl.ingest.handler.lambda_handler"
      description = "Reads rows changed in totesys since the last run into CSV in the ingested bucket."
    }
    process = {
      handler     = "totesys_etl.process.handler.lambda_handler"
      description = "Turns an ingested run's CSV into star-schema Parquet in the processed bucket."
    }
    load = {
      handler     = "totesys_etl.load.handler.lambda_handler"
      description = "Loads a processed run's Parquet into the warehouse, exactly once."
    }
  }

  # Every error_kind the code logs on an ERROR line (src/totesys_etl/errors.py, contract §6); each
  # gets its own alarm.
  error_kinds = [
    "source_unavailable",
    "warehouse_unavailable",
    "lake_unavailable",
    "secret_invalid",
    "quarantined_file",
    "quarantined_manifest",
    "quarantined_rows",
    "run_id_collision",
    "load_failed",
    "configuration",
    "pipeline_failed",
    "fx_unavailable",
    # change data capture (contract §10, readme_files/cdc.md)
    "cdc_slot_lag",
    "cdc_slot_lost",
    "cdc_unchanged_value",
    "cdc_truncate",
    "source_schema_changed",
  ]

  # The stages that invoke their own function once per part of a run (contract §4 "Parts",
  # readme_files/adr/0006-parts.md), and so may call lambda:InvokeFunction on it (iam.tf).
  fanout_stages = ["process", "load"]

  # The functions run in a VPC exactly when subnets are given (variables.tf).
  in_vpc = length(var.vpc_subnet_ids) > 0

  metric_namespace = "TotesysEtl/${local.prefix}"
  glue_database    = replace(local.prefix, "-", "_")
}
