terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
  }

  # Its own state, in the same bucket as the pipeline's under another key (partial configuration):
  #   terraform init -backend-config="bucket=<state bucket>" -backend-config="key=bootstrap/terraform.tfstate" \
  #     -backend-config="region=eu-west-2" -backend-config="encrypt=true" -backend-config="use_lockfile=true"
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = { Project = var.project, Purpose = "github-actions-oidc" }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}
