# Two roles for .github/workflows/test-and-deploy.yml, assumed through GitHub's OIDC provider (no
# long-lived keys). Applied once per account, by an administrator, before the workflow first runs.
#
# GitHub's token names the job in its `sub` claim (default format):
#   pull request                     repo:<owner>/<name>:pull_request
#   job with `environment: <env>`    repo:<owner>/<name>:environment:<env>
#   other push to a branch           repo:<owner>/<name>:ref:refs/heads/<branch>
# So the usual `ref:refs/heads/main` trust matches neither the plan job (pull_request) nor the
# deploy job (environment:dev). The plan role is read-only, so a pull request's code, which runs
# before any review, can never change the account; it also serves pushes to main (the
# managed-layer job downloads the AWS SDK for pandas layer with it). Only a job in a deploy
# environment (where GitHub can require reviewers) gets the apply role.
locals {
  oidc_host     = "token.actions.githubusercontent.com"
  oidc_provider = var.create_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn
  account_id    = data.aws_caller_identity.current.account_id
  partition     = data.aws_partition.current.partition

  subjects = {
    plan  = ["repo:${var.github_repository}:pull_request", "repo:${var.github_repository}:ref:refs/heads/main"]
    apply = [for env in var.deploy_environments : "repo:${var.github_repository}:environment:${env}"]
  }
}

resource "aws_iam_openid_connect_provider" "github" {
  count = var.create_oidc_provider ? 1 : 0

  url            = "https://${local.oidc_host}"
  client_id_list = ["sts.amazonaws.com"]
  # AWS trusts GitHub's certificate through its own CA store; the API still wants a thumbprint.
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
}

data "aws_iam_openid_connect_provider" "github" {
  count = var.create_oidc_provider ? 0 : 1
  url   = "https://${local.oidc_host}"
}

data "aws_iam_policy_document" "trust" {
  for_each = local.subjects

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = each.value
    }
  }
}

resource "aws_iam_role" "github" {
  for_each = local.subjects

  name                 = "github-${var.project}-${each.key}" # outside `<project>-*`: the apply role cannot edit itself
  description          = each.key == "plan" ? "terraform plan for pull requests of ${var.github_repository} (read-only)" : "terraform apply from ${var.github_repository}'s deploy environments"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
}

# plan: read everything (refresh), never a secret's value or a decrypted object (ReadOnlyAccess
# grants neither secretsmanager:GetSecretValue nor kms:Decrypt), and the state (read only: the
# workflow plans with -lock=false).
resource "aws_iam_role_policy_attachment" "plan_read_only" {
  role       = aws_iam_role.github["plan"].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/ReadOnlyAccess"
}

# apply: everything tf/ manages except IAM (PowerUserAccess), and IAM only for the pipeline's own
# roles, which it may pass to Lambda alone.
resource "aws_iam_role_policy_attachment" "apply_power_user" {
  role       = aws_iam_role.github["apply"].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/PowerUserAccess"
}

data "aws_iam_policy_document" "apply_iam" {
  statement {
    sid = "PipelineRoles"
    actions = [
      "iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:UpdateRole", "iam:UpdateRoleDescription",
      "iam:UpdateAssumeRolePolicy", "iam:TagRole", "iam:UntagRole", "iam:ListRoleTags",
      "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies",
      "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole",
    ]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/${var.project}-*"]
  }

  statement {
    sid       = "PassPipelineRolesToLambda"
    actions   = ["iam:PassRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/${var.project}-*"]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "apply_iam" {
  name   = "github-${var.project}-apply-iam"
  role   = aws_iam_role.github["apply"].id
  policy = data.aws_iam_policy_document.apply_iam.json
}
