# terraform plan -var-file=envs/dev.tfvars -var="alert_email=…"
environment                 = "dev"
log_level                   = "DEBUG"
log_retention_days          = 30
secret_recovery_window_days = 0
force_destroy_buckets       = true
kms_deletion_window_days    = 7
sweep_interval_minutes      = 15
