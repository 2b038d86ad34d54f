output "plan_role_arn" {
  description = "Repository secret AWS_PLAN_ROLE_ARN: the read-only role of the pull-request plan."
  value       = aws_iam_role.github["plan"].arn
}

output "apply_role_arn" {
  description = "Secret AWS_DEPLOY_ROLE_ARN (of the deploy environment): the role of terraform apply."
  value       = aws_iam_role.github["apply"].arn
}
