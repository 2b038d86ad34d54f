variable "github_repository" {
  description = "The GitHub repository whose workflow may assume the roles, as owner/name."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "deploy_environments" {
  description = "GitHub environments whose jobs may assume the apply role (the workflow's deploy job runs in `dev`)."
  type        = list(string)
  default     = ["dev"]

  validation {
    condition     = length(var.deploy_environments) > 0 && alltrue([for e in var.deploy_environments : can(regex("^[A-Za-z0-9._-]+$", e))])
    error_message = "deploy_environments must name at least one GitHub environment."
  }
}

variable "project" {
  description = "The pipeline's `project` variable: the apply role may manage IAM roles named `<project>-*` only."
  type        = string
  default     = "totesys-etl"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.project))
    error_message = "project must be 3-32 characters of lowercase letters, digits and hyphens."
  }
}

variable "state_bucket" {
  description = "The S3 bucket holding Terraform state (readme_files/deployment.md, step 2)."
  type        = string
}

variable "aws_region" {
  description = "AWS region of the deployment."
  type        = string
  default     = "eu-west-2"
}

variable "create_oidc_provider" {
  description = "Whether to create GitHub's OIDC identity provider; false when the account already has one (one per account)."
  type        = bool
  default     = true
}
