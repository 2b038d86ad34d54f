terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
  }

  # Remote state in S3, configured at init time (partial configuration) so one configuration
  # serves every account and environment:
  #   terraform init -backend-config=envs/dev.s3.tfbackend -backend-config="bucket=<state bucket>"
  # envs/<env>.s3.tfbackend holds key, region, encrypt and use_lockfile (S3-native locking,
  # Terraform >= 1.10); readme_files/deployment.md, step 2, explains the state bucket.
  backend "s3" {}
}
