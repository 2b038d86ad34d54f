"""The optional VPC shape (vpc_subnet_ids, vpc_security_group_ids) applied to moto, then taken away (issue 27).

The session's deployment (conftest.py) is the shape without a VPC, checked by test_apply.py. Here the
same deployment is applied again with moto's default subnets and security group: the functions get
their vpc_config and each role what AWSLambdaVPCAccessExecutionRole grants, a second plan shows no
drift, and applying without the variables removes both again (so the deployment ends as it began).
Updating the shared deployment in place costs two applies that touch 6 resources (~40 s), far less
than a second deployment. moto checks wiring only: no network interface is really created.
"""
from __future__ import annotations

import json

import boto3

STAGES = ("ingest", "process", "load")
VPC_ACTIONS = {"ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
               "ec2:UnassignPrivateIpAddresses", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}


def _ec2_actions(iam, role: str) -> dict[str, set[str]]:
    document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    grants = {}
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            if action.startswith("ec2:"):
                grants[action] = set(resources)
    return grants


def test_vpc_variables_put_the_functions_in_the_vpc_and_grant_their_network_interfaces(deployment, aws):
    terraform, outputs = deployment.terraform, deployment.outputs
    ec2, lam, iam = boto3.client("ec2"), boto3.client("lambda"), boto3.client("iam")
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"])[:2]
    [group] = [g["GroupId"] for g in ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]]
    in_vpc = (f"-var=vpc_subnet_ids={json.dumps(subnets)}", f"-var=vpc_security_group_ids={json.dumps([group])}")
    account = outputs["kms_key_arn"].split(":")[4]

    terraform("apply", "-auto-approve", "-refresh=false", *in_vpc)
    try:
        for stage in STAGES:
            config = lam.get_function_configuration(FunctionName=outputs["function_names"][stage])["VpcConfig"]
            assert (sorted(config["SubnetIds"]), config["SecurityGroupIds"]) == (subnets, [group])
            grants = _ec2_actions(iam, f"{terraform.prefix}-{stage}")
            assert set(grants) == VPC_ACTIONS
            assert grants["ec2:CreateNetworkInterface"] == {f"arn:aws:ec2:eu-west-2:{account}:*"}
            assert grants["ec2:DescribeSubnets"] == {"*"}  # Describe has no resource-level permissions
        assert terraform("plan", "-detailed-exitcode", "-lock=false", *in_vpc, ok=(0, 2)).returncode == 0, \
            "plan after the VPC apply shows drift"
    finally:
        terraform("apply", "-auto-approve", "-refresh=false")
    for stage in STAGES:
        config = lam.get_function_configuration(FunctionName=outputs["function_names"][stage]).get("VpcConfig")
        assert not (config or {}).get("SubnetIds")
        assert _ec2_actions(iam, f"{terraform.prefix}-{stage}") == {}


def test_subnets_without_security_groups_are_refused(deployment):
    result = deployment.terraform("plan", "-refresh=false", "-lock=false", '-var=vpc_subnet_ids=["subnet-0abc"]',
                                  ok=(1,))
    assert "set together" in " ".join(result.stderr.split())
