# The two database credentials (contract §5). Terraform creates the secrets but never their values:
# an operator puts JSON {"host","port","username","password","dbname"} with
# `aws secretsmanager put-secret-value` (readme_files/deployment.md, step 4), so no password is ever in
# Terraform state, a variable or the repository.
resource "aws_secretsmanager_secret" "source" {
  #checkov:skip=CKV2_AWS_57:The source is another team's database; its owners rotate the read-only role's password and update this secret.
  name                    = var.source_secret_name
  description             = "${local.prefix}: read-only credentials of the totesys source database"
  kms_key_id              = aws_kms_key.pipeline.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret" "warehouse" {
  #checkov:skip=CKV2_AWS_57:Rotation needs a rotation function with network access to the warehouse; the warehouse's owners rotate and update this secret.
  name                    = var.warehouse_secret_name
  description             = "${local.prefix}: credentials of the warehouse database"
  kms_key_id              = aws_kms_key.pipeline.arn
  recovery_window_in_days = var.secret_recovery_window_days
}
