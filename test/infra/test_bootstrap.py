"""tf/bootstrap/: the GitHub Actions roles, planned against moto and read from the plan (issue 27).

GitHub's OIDC token names a pull request's job `repo:<o>/<r>:pull_request` and a job in an
environment `repo:<o>/<r>:environment:<env>`; the usual `ref:refs/heads/main` trust matches
neither. Planned, not applied: moto does not load AWS's managed policies (ReadOnlyAccess,
PowerUserAccess), so attaching them fails there; the plan holds every document the apply would
send. The OIDC provider is created in moto first and looked up (create_oidc_provider = false), so
the trust policies are known at plan time.
"""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
REPO = "example-org/totesys-etl"
HOST = "token.actions.githubusercontent.com"


@pytest.fixture(scope="module")
def planned(moto_server, terraform_for_moto):
    """Resource address -> planned values of tf/bootstrap/ for REPO, deploy environments dev and prod."""
    iam = boto3.client("iam", endpoint_url=moto_server.endpoint, region_name="eu-west-2",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    provider = iam.create_open_id_connect_provider(Url=f"https://{HOST}", ClientIDList=["sts.amazonaws.com"],
                                                   ThumbprintList=["6938fd4d98bab03faadb97b34396831e3780aea1"])
    try:
        terraform = terraform_for_moto(ROOT / "tf" / "bootstrap", {
            "github_repository": REPO, "deploy_environments": ["dev", "prod"], "state_bucket": "state",
            "create_oidc_provider": False})
        terraform("plan", "-out=tfplan", "-lock=false")
        plan = json.loads(terraform("show", "-json", "tfplan").stdout)
        yield {r["address"]: r["values"] for r in plan["planned_values"]["root_module"]["resources"]}
    finally:
        iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=provider["OpenIDConnectProviderArn"])


def _trust(planned, role: str) -> dict:
    [statement] = json.loads(planned[f'aws_iam_role.github["{role}"]']["assume_role_policy"])["Statement"]
    return statement


def test_plan_role_trusts_pull_requests_and_main_and_reads_only(planned):
    trust = _trust(planned, "plan")
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"]["Federated"].endswith(f":oidc-provider/{HOST}")
    assert trust["Condition"] == {"StringEquals": {
        f"{HOST}:aud": "sts.amazonaws.com",
        f"{HOST}:sub": [f"repo:{REPO}:pull_request", f"repo:{REPO}:ref:refs/heads/main"]}}
    attached = {v["policy_arn"] for k, v in planned.items()
                if k.startswith("aws_iam_role_policy_attachment.") and v["role"] == "github-totesys-etl-plan"}
    assert attached == {"arn:aws:iam::aws:policy/ReadOnlyAccess"}
    # The one inline policy is the apply role's (its role id is known only after the apply).
    assert [k for k in planned if k.startswith("aws_iam_role_policy.")] == ["aws_iam_role_policy.apply_iam"]


def test_apply_role_trusts_only_the_deploy_environments(planned):
    trust = _trust(planned, "apply")
    assert trust["Condition"] == {"StringEquals": {
        f"{HOST}:aud": "sts.amazonaws.com",
        f"{HOST}:sub": [f"repo:{REPO}:environment:dev", f"repo:{REPO}:environment:prod"]}}
    assert "StringLike" not in trust["Condition"]  # no wildcard: a branch or a PR never matches


def test_apply_role_manages_only_the_pipelines_roles_and_not_itself(planned):
    policy = json.loads(planned["aws_iam_role_policy.apply_iam"]["policy"])
    resources = {r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                          else s["Resource"])}
    assert {r.split(":role/")[1] for r in resources} == {"totesys-etl-*"}
    assert not any(name.startswith("totesys-etl-") for name in
                   (planned[f'aws_iam_role.github["{role}"]']["name"] for role in ("plan", "apply")))
    [pass_role] = [s for s in policy["Statement"] if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
