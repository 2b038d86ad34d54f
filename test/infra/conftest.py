"""tf/ applied once per test session against the session's moto server, shared by the infra tests.

Applying takes a minute or two on 2 cores (a bucket lifecycle configuration alone waits ~55 s by
design), so test_apply.py (the wiring) and test_iam_calls.py (every call a handler makes is
granted) read the same deployment, destroyed when the session ends.

The deployment lives in a temporary copy of tf/ with a test-only `moto_override.tf` (local
backend, moto's endpoints), never committed; `terraform init` there checks the provider against
the committed lock file (tf/.terraform.lock.hcl), as CI's does. Terraform must be installed: the
tests fail, they do not skip, when it is missing. The provider comes from a local mirror when one
exists (the same search list as .ci/tf-validate.sh), otherwise from the registry.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess  # nosec B404: runs terraform, a fixed executable, with fixed arguments
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIRROR_CANDIDATES = (os.environ.get("TF_PLUGIN_MIRROR", ""), "/opt/tf-plugins",
                     "~/.terraform.d/plugins", "~/.local/share/terraform/plugins",
                     "/usr/local/share/terraform/plugins", "/usr/share/terraform/plugins")
SERVICES = ("cloudwatch", "ec2", "events", "glue", "iam", "kms", "lambda", "logs", "s3", "secretsmanager",
            "sns", "sqs", "sts")
REGION = "eu-west-2"


def _provider_mirror() -> Path | None:
    for candidate in MIRROR_CANDIDATES:
        if candidate and (Path(candidate).expanduser() / "registry.terraform.io/hashicorp/aws").is_dir():
            return Path(candidate).expanduser()
    return None


def _load_packager():
    spec = importlib.util.spec_from_file_location("ci_package", ROOT / ".ci" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Terraform:
    """Runs terraform in one working directory; `prefix` and `names` are what the test deployed."""

    def __init__(self, workdir: Path, env: dict[str, str], prefix: str, names: dict[str, str]):
        self.workdir, self.env, self.prefix, self.names = workdir, env, prefix, names
        self.binary = shutil.which("terraform")

    def __call__(self, *args: str, ok: tuple[int, ...] = (0,), stdin: str | None = None
                 ) -> subprocess.CompletedProcess:
        result = subprocess.run([self.binary, *args, "-no-color"],  # nosec B603
                                cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=600,
                                input=stdin)
        if result.returncode not in ok:
            pytest.fail(f"terraform {args[0]} exited {result.returncode}:\n{result.stdout[-4000:]}\n"
                        f"{result.stderr[-4000:]}")
        return result


def _override(endpoint: str) -> str:
    endpoints = "\n".join(f'    {service} = "{endpoint}"' for service in SERVICES)
    return f'''# Written by test/infra/conftest.py into a temporary copy of tf/: never committed.
terraform {{
  backend "local" {{}}
}}

provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true

  endpoints {{
{endpoints}
  }}
}}
'''


@dataclass
class Deployment:
    """What the session applied: terraform in its folder, and the outputs of the apply."""

    terraform: Terraform
    outputs: dict

    @property
    def buckets(self) -> dict[str, str]:
        return {"ingested": self.outputs["ingested_bucket"], "processed": self.outputs["processed_bucket"]}


def copy_for_moto(config: Path, tmp_path: Path, endpoint: str) -> tuple[Path, dict[str, str]]:
    """A copy of the Terraform configuration `config` that talks to moto at `endpoint`, and its environment."""
    if shutil.which("terraform") is None:
        pytest.fail("terraform is not installed: tf/ cannot be tested (install it, e.g. hashicorp/setup-terraform)")
    workdir = tmp_path / config.name
    shutil.copytree(config, workdir, ignore=shutil.ignore_patterns(
        ".terraform", "*.tfstate*", ".terraformrc", "moto_override.tf", "scripts", "bootstrap"))
    (workdir / "moto_override.tf").write_text(_override(endpoint))
    mirror = _provider_mirror()
    rc = tmp_path / "terraformrc"
    rc.write_text('provider_installation {\n  filesystem_mirror {\n'
                  f'    path    = "{mirror}"\n    include = ["registry.terraform.io/hashicorp/*"]\n  }}\n}}\n'
                  if mirror else "")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOTESYS_"))},
           "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1",
           "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
    return workdir, env


@pytest.fixture(scope="session")
def deployment(moto_server, tmp_path_factory):
    """tf/ applied to moto (with `make package`'s zips), destroyed at the end of the session."""
    tmp_path = tmp_path_factory.mktemp("terraform")
    workdir, env = copy_for_moto(ROOT / "tf", tmp_path, moto_server.endpoint)
    build = tmp_path / "build"
    _load_packager().build(build)

    name = f"tfit{os.getpid()}"
    (workdir / "test.auto.tfvars.json").write_text(json.dumps({
        "project": name, "environment": "test", "aws_region": REGION, "alert_email": "alerts@example.com",
        "build_dir": str(build), "aws_sdk_pandas_layer_arn": "", "force_destroy_buckets": True,
        "secret_recovery_window_days": 0, "kms_deletion_window_days": 7,
        "source_secret_name": f"{name}/source", "warehouse_secret_name": f"{name}/warehouse",
        "lambda_ephemeral_storage_mb": {"ingest": 1024, "process": 3072, "load": 1536},
    }))
    tf = Terraform(workdir, env, prefix=f"{name}-test",
                   names={"source_secret": f"{name}/source", "warehouse_secret": f"{name}/warehouse"})
    tf("init")
    try:
        tf("apply", "-auto-approve")
        outputs = {k: v["value"] for k, v in json.loads(tf("output", "-json").stdout).items()}
        yield Deployment(tf, outputs)
    finally:
        # test_apply's plan refreshed everything, so destroy need not refresh again (a third of its time).
        tf("destroy", "-auto-approve", "-refresh=false")


@pytest.fixture(scope="session")
def terraform_for_moto(moto_server, tmp_path_factory):
    """A factory: a copy of `config` (a folder) set up for moto with `tfvars`, initialised, as a Terraform."""
    def make(config: Path, tfvars: dict) -> Terraform:
        workdir, env = copy_for_moto(config, tmp_path_factory.mktemp(config.name), moto_server.endpoint)
        (workdir / "test.auto.tfvars.json").write_text(json.dumps(tfvars))
        terraform = Terraform(workdir, env, prefix="", names={})
        terraform("init")
        return terraform
    return make
