#!/usr/bin/env bash
# terraform fmt -check, init (no backend) and validate over tf/ and tf/bootstrap/, offline: the AWS provider comes
# from a local filesystem mirror found below, through a CLI config written at run time into
# tf/.terraformrc (gitignored). Without terraform or a mirror it prints one SKIPPED line, exit 0.
# The mirror search list is shared with test/infra/test_apply.py (keep the two in step).
set -euo pipefail
cd "$(dirname "$0")/../tf"

skip() { echo "tf-validate: SKIPPED ($1)"; exit 0; }

terraform_bin=$(command -v terraform || true)
[ -n "$terraform_bin" ] || skip "terraform not found"

mirror=""
for candidate in "${TF_PLUGIN_MIRROR:-}" /opt/tf-plugins "$HOME/.terraform.d/plugins" \
        "$HOME/.local/share/terraform/plugins" /usr/local/share/terraform/plugins /usr/share/terraform/plugins; do
    if [ -n "$candidate" ] && [ -d "$candidate/registry.terraform.io/hashicorp/aws" ]; then
        mirror=$candidate
        break
    fi
done
[ -n "$mirror" ] || skip "no AWS provider mirror found"

cat > .terraformrc <<RC
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/*"]
  }
}
RC
export TF_CLI_CONFIG_FILE="$PWD/.terraformrc"
export TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1

"$terraform_bin" fmt -check -recursive -diff
# The pipeline (tf/) and the one-off GitHub OIDC roles (tf/bootstrap/) are separate configurations.
# bootstrap's working data goes under tf/.terraform/ (gitignored) rather than tf/bootstrap/.terraform/.
for config in . bootstrap; do
    data_dir="$PWD/.terraform"
    [ "$config" = . ] || data_dir="$PWD/.terraform/config-$config"
    TF_DATA_DIR="$data_dir" "$terraform_bin" -chdir="$config" init -backend=false -input=false -no-color >/dev/null
    TF_DATA_DIR="$data_dir" "$terraform_bin" -chdir="$config" validate -no-color
done
echo "tf-validate: OK ($("$terraform_bin" version | head -n 1), provider mirror $mirror)"
