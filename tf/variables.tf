variable "project" {
  description = "Project name: the first part of every resource name (`<project>-<environment>-…`)."
  type        = string
  default     = "totesys-etl"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.project))
    error_message = "project must be 3-32 characters of lowercase letters, digits and hyphens (it names S3 buckets)."
  }
}

variable "environment" {
  description = "Deployment environment, e.g. dev or prod: the second part of every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.environment))
    error_message = "environment must be 2-12 lowercase letters or digits."
  }

  # The longest name built from them is a bucket's, `<project>-<environment>-processed-<account id>`,
  # and S3 allows 63 characters: 1 + 11 + 12 leave 39 for the two (every other name is shorter).
  validation {
    condition     = length(var.project) + length(var.environment) <= 39
    error_message = "project and environment together must be at most 39 characters: the bucket name <project>-<environment>-processed-<12-digit account id> must fit S3's 63."
  }
}

variable "aws_region" {
  description = "AWS region everything is deployed to."
  type        = string
  default     = "eu-west-2"
}

variable "tags" {
  description = "Extra tags added to every resource (Project and Environment are always set)."
  type        = map(string)
  default     = {}
}

variable "build_dir" {
  description = "Folder holding function.zip and layer.zip built by `make package` (.ci/package.py); null means <repo>/build."
  type        = string
  default     = null
}

variable "lambda_runtime" {
  description = "Python runtime of the three functions; must match the AWS SDK for pandas layer's Python version."
  type        = string
  default     = "python3.12"

  validation {
    condition     = contains(["python3.11", "python3.12"], var.lambda_runtime)
    error_message = "lambda_runtime must be python3.11 or python3.12."
  }
}

variable "aws_sdk_pandas_layer_arn" {
  description = <<-EOT
    ARN of the AWS SDK for pandas managed layer (pandas, pyarrow, awswrangler and pg8000) for
    this region and runtime: see https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html.
    Empty means none (tests against a local AWS API, which cannot resolve another account's layer).
  EOT
  type        = string
  default     = "arn:aws:lambda:eu-west-2:336392948345:layer:AWSSDKPandas-Python312:16"

  validation {
    condition     = var.aws_sdk_pandas_layer_arn == "" || can(regex("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:layer:[A-Za-z0-9_-]+:[0-9]+$", var.aws_sdk_pandas_layer_arn))
    error_message = "aws_sdk_pandas_layer_arn must be a layer version ARN or empty."
  }
}

variable "lambda_memory_mb" {
  description = <<-EOT
    Memory (MB) per stage: ingest, process, load. CPU grows with memory in Lambda. `make bench`
    measured peak RSS at 10,000,000 orders (one invocation per stage): ingest 156, process 630,
    load 814 MB (readme_files/benchmarks.md); each default leaves at least 40 % above that.
  EOT
  type        = map(number)
  default = {
    ingest  = 1024
    process = 2048
    load    = 1536
  }

  validation {
    condition     = alltrue([for s in ["ingest", "process", "load"] : contains(keys(var.lambda_memory_mb), s)])
    error_message = "lambda_memory_mb needs ingest, process and load."
  }
}

variable "lambda_timeout_s" {
  description = "Timeout (seconds, at most 900) per stage: ingest, process, load. The loader may wait up to 60 s for the advisory lock."
  type        = map(number)
  default = {
    ingest  = 600
    process = 600
    load    = 900
  }

  validation {
    condition     = alltrue([for s in ["ingest", "process", "load"] : lookup(var.lambda_timeout_s, s, 0) >= 60 && lookup(var.lambda_timeout_s, s, 0) <= 900])
    error_message = "lambda_timeout_s needs ingest, process and load, each between 60 and 900."
  }
}

variable "lambda_ephemeral_storage_mb" {
  description = <<-EOT
    /tmp (MB, 512-10240) per stage: ingest, process, load. A full load holds files in /tmp: the
    ingest up to 3 CSVs, the processor up to 4 CSVs and their Parquet, the loader two Parquet
    files (the next one downloads while the current one is copied). `make bench ORDERS=10000000`
    measured up to 2236 and 3318 MB for the ingest and the processor, and 643 MB for the loader's
    two files (peak_tmp_mb; 17, 42 and 9 MB at 100,000 orders: linear in orders), so the defaults
    hold 10M orders with 1.8x headroom or more, where 512 MB (Lambda's default) runs out near 1M in the
    processor (readme_files/benchmarks.md). Raise them for a larger source.
  EOT
  type        = map(number)
  default = {
    ingest  = 4096
    process = 8192
    load    = 2048
  }

  validation {
    condition     = alltrue([for s in ["ingest", "process", "load"] : lookup(var.lambda_ephemeral_storage_mb, s, 0) >= 512 && lookup(var.lambda_ephemeral_storage_mb, s, 0) <= 10240])
    error_message = "lambda_ephemeral_storage_mb needs ingest, process and load, each between 512 and 10240."
  }
}

variable "lambda_async_retries" {
  description = "Retries (0-2) of a failed asynchronous invocation (schedule or S3 event). 0: the next schedule, or the sweep for an S3 event, runs the work again anyway, and a retry only repeats the failure and its alarm."
  type        = number
  default     = 0

  validation {
    condition     = contains([0, 1, 2], var.lambda_async_retries)
    error_message = "lambda_async_retries must be 0, 1 or 2."
  }
}

variable "lambda_max_event_age_s" {
  description = "Seconds (60-21600) an asynchronous event may wait for a function (throttled, retried) before it goes to the failed-events queue; an older tick or S3 event is stale, the sweep covers it."
  type        = number
  default     = 3600

  validation {
    condition     = var.lambda_max_event_age_s >= 60 && var.lambda_max_event_age_s <= 21600
    error_message = "lambda_max_event_age_s must be between 60 and 21600."
  }
}

variable "vpc_subnet_ids" {
  description = <<-EOT
    Private subnets (ids) to run the functions in, e.g. where the databases are private; empty (the
    default) runs them outside any VPC. Inside a VPC every stage needs S3 (a gateway endpoint), the
    ingest and the loader Secrets Manager (an interface endpoint) and all three CloudWatch Logs
    (written by Lambda itself, no endpoint needed), or a NAT gateway for all of it; see
    readme_files/deployment.md.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.vpc_subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "vpc_subnet_ids must be subnet ids (subnet-…)."
  }
}

variable "vpc_security_group_ids" {
  description = "Security groups (ids) of the functions inside the VPC: outbound 5432 to both databases and 443 to the endpoints. Set exactly when vpc_subnet_ids is."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.vpc_security_group_ids : can(regex("^sg-[0-9a-f]+$", id))])
    error_message = "vpc_security_group_ids must be security group ids (sg-…)."
  }

  validation {
    condition     = (length(var.vpc_subnet_ids) == 0) == (length(var.vpc_security_group_ids) == 0)
    error_message = "vpc_subnet_ids and vpc_security_group_ids are set together (a function in a VPC needs both) or not at all."
  }
}

variable "incomplete_upload_days" {
  description = "Days after which the lake buckets' lifecycle rule removes the parts of a multipart upload that never completed."
  type        = number
  default     = 1

  validation {
    condition     = var.incomplete_upload_days >= 1 && floor(var.incomplete_upload_days) == var.incomplete_upload_days
    error_message = "incomplete_upload_days must be a whole number of days, at least 1."
  }
}

variable "log_level" {
  description = "TOTESYS_LOG_LEVEL of the functions (DEBUG, INFO, WARNING or ERROR)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "fx_api_url" {
  description = "TOTESYS_FX_API_URL (contract §5, §9): base URL of a Frankfurter-shaped FX rates API the ingest reads daily GBP rates from, e.g. https://api.frankfurter.dev/v1. Empty: the FX source is off. In a VPC the functions need a NAT route to reach it."
  type        = string
  default     = ""

  validation {
    condition     = var.fx_api_url == "" || can(regex("^https?://[^ ]+$", var.fx_api_url))
    error_message = "fx_api_url must be empty or an http(s) URL."
  }
}

variable "source_mode" {
  description = "TOTESYS_SOURCE_MODE (contract §10): poll (a SELECT-only role) or cdc (a logical replication slot, read as a LOGIN REPLICATION / rds_replication role with SELECT, whose credentials the source secret then holds; the DBA steps are readme_files/cdc.md)."
  type        = string
  default     = "poll"

  validation {
    condition     = contains(["poll", "cdc"], var.source_mode)
    error_message = "source_mode must be poll or cdc."
  }
}

variable "cdc_max_lag_mb" {
  description = "TOTESYS_CDC_MAX_LAG_MB (contract §10): WAL the replication slot may retain before the cdc_slot_lag ERROR and its alarm fire. Keep it well below the source's max_slot_wal_keep_size."
  type        = number
  default     = 1024

  validation {
    condition     = var.cdc_max_lag_mb >= 1
    error_message = "cdc_max_lag_mb must be at least 1."
  }
}

variable "ingest_interval_minutes" {
  description = "Minutes between ingest runs (the EventBridge schedule); the silence alarm fires after two intervals without a successful run."
  type        = number
  default     = 5

  validation {
    condition     = var.ingest_interval_minutes >= 1 && floor(var.ingest_interval_minutes) == var.ingest_interval_minutes
    error_message = "ingest_interval_minutes must be a whole number of minutes, at least 1."
  }
}

variable "sweep_interval_minutes" {
  description = "Minutes between the processor's and loader's sweeps, which pick up any run whose S3 event was lost or failed."
  type        = number
  default     = 15

  validation {
    condition     = var.sweep_interval_minutes >= 1 && floor(var.sweep_interval_minutes) == var.sweep_interval_minutes
    error_message = "sweep_interval_minutes must be a whole number of minutes, at least 1."
  }
}

variable "schedules_enabled" {
  description = "Whether the EventBridge schedules are enabled (false pauses the pipeline without destroying it)."
  type        = bool
  default     = true
}

variable "source_secret_name" {
  description = "Secrets Manager name of the totesys source credentials, JSON {\"host\",\"port\",\"username\",\"password\",\"dbname\"} of a read-only role."
  type        = string
  default     = "totesys_db_credentials"
}

variable "warehouse_secret_name" {
  description = "Secrets Manager name of the warehouse credentials, JSON {\"host\",\"port\",\"username\",\"password\",\"dbname\"}."
  type        = string
  default     = "postgres_db_credentials"
}

variable "secret_recovery_window_days" {
  description = "Days a destroyed secret can still be restored (0 deletes at once, so a name can be reused immediately)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the functions' logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}

variable "alert_email" {
  description = "Email address that receives the alarms (SNS sends a confirmation mail first; see readme_files/deployment.md, step 5)."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an email address."
  }
}

variable "force_destroy_buckets" {
  description = "Whether `terraform destroy` may delete the lake buckets with their objects (keep false where the data matters)."
  type        = bool
  default     = false
}

variable "kms_deletion_window_days" {
  description = "Days before a destroyed KMS key is deleted (7-30)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "landing_writer_arns" {
  description = "ARNs of the partner accounts or roles that may put courier files into the landing bucket (contract §9); empty: none yet."
  type        = list(string)
  default     = []
}

variable "landing_expiration_days" {
  description = "Days after which a courier file (long since taken into the ingested bucket) expires from the landing bucket."
  type        = number
  default     = 30

  validation {
    condition     = var.landing_expiration_days >= 2
    error_message = "landing_expiration_days must be at least 2 (the sweep looks a day back)."
  }
}

variable "part_rows" {
  description = "TOTESYS_PART_ROWS (contract §4 \"Parts\"): a first read of a table over this many rows is written in parts, each processed by an invocation of its own (readme_files/adr/0006-parts.md). The default keeps a part's processing and loading a small fraction of Lambda's 15 minutes at the memory and /tmp sizes above."
  type        = number
  default     = 2000000

  validation {
    condition     = var.part_rows >= 1000
    error_message = "part_rows must be at least 1000."
  }
}

variable "whole_run_rows" {
  description = "TOTESYS_WHOLE_RUN_ROWS (contract §4 \"Parts\"): a run in parts of at most this many rows is handled whole by one invocation of each stage (the processor processes its parts itself, the loader copies them as files); a bigger one is fanned out, a part per invocation (readme_files/adr/0006-parts.md). The default is about a 13M-order first load; 10M orders (38M rows in parts) took 87 to 104 s to load whole on a 2-core machine (readme_files/benchmarks.md)."
  type        = number
  default     = 50000000

  validation {
    condition     = var.whole_run_rows >= 1
    error_message = "whole_run_rows must be at least 1."
  }
}
