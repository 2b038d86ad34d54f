# terraform plan -var-file=envs/prod.tfvars -var="alert_email=…"
environment                 = "prod"
log_level                   = "INFO"
log_retention_days          = 365
secret_recovery_window_days = 30
force_destroy_buckets       = false
kms_deletion_window_days    = 30
ingest_interval_minutes     = 5
sweep_interval_minutes      = 15
