"""Names built from `project` and `environment` fit AWS's limits, or terraform refuses them at plan time.

The longest name is a bucket's, `<project>-<environment>-processed-<account id>`, and S3 allows 63
characters; each variable alone passed its own validation, yet the two at their longest made 77,
and the apply failed half-way in AWS (moto does not check the length). The check runs against the
session's deployment (conftest.py): `terraform console` evaluates the variables' validations and
the locals the names come from, with the account id moto gives, and a refused `terraform plan`
stops at the validation; neither touches the state.
"""
from __future__ import annotations

import json

import pytest

#: AWS's limits on the names built from the prefix (S3 buckets; IAM roles, functions, SQS queues).
LIMITS = {"bucket": 63, "role": 64, "function": 64, "queue": 80}


def _console(terraform, project: str, environment: str):
    expression = ('jsonencode({buckets = local.buckets, prefix = local.prefix, '
                  'queue = "${local.prefix}-failed-events"})')
    return terraform("console", f"-var=project={project}", f"-var=environment={environment}",
                     stdin=expression)


def test_the_longest_names_allowed_fit_every_limit(deployment):
    project, environment = "p" + "x" * 26, "e" + "y" * 11  # 27 + 12 = 39, the most allowed
    names = json.loads(json.loads(_console(deployment.terraform, project, environment).stdout))
    assert max(len(b) for b in names["buckets"].values()) == LIMITS["bucket"]
    longest_stage = max(("ingest", "process", "load"), key=len)
    assert len(f"{names['prefix']}-{longest_stage}") <= min(LIMITS["role"], LIMITS["function"])
    assert len(names["queue"]) <= LIMITS["queue"]


@pytest.mark.parametrize("project, environment", [("p" + "x" * 27, "e" + "y" * 11), ("p" + "x" * 31, "e" + "y" * 7)])
def test_a_project_and_environment_too_long_together_fail_the_plan(deployment, project, environment):
    """Each passes its own validation; together they would make a bucket name over 63 characters."""
    result = deployment.terraform("plan", "-refresh=false", "-lock=false", f"-var=project={project}",
                                  f"-var=environment={environment}", ok=(1,))
    assert "Invalid value for variable" in result.stderr
    assert "at most 39 characters" in " ".join((result.stdout + result.stderr).split())
