"""IAM grants what the code calls (issue 21): every AWS call each real handler makes is allowed by the
policy tf/ gives that handler's role, on the resource it touches.

moto does not enforce IAM, so a call missing from a policy passes every other test and fails only
in AWS (the missing s3:AbortMultipartUpload did: a processor rerun of a run with a file over 64 MB
got AccessDenied instead of 412, for good). Here the three handlers run in-process against real
PostgreSQL and moto, through their paths that reach S3 differently: small puts, multipart uploads
(the threshold lowered), the 412-then-abort of a rerun, quarantine copies from a corrupt manifest,
and credentials from Secrets Manager as in Lambda. A hook on the botocore session the adapters'
clients are built on records each call's operation, bucket, key and secret. The policies are those terraform applied
(the session's deployment, conftest.py), read back from IAM, so what is checked is the JSON AWS
would evaluate. A handler that starts making a call its policy lacks fails this test; so does a
call this file cannot map to IAM actions (add it to ACTIONS below, from the S3 documentation).
"""
from __future__ import annotations

import fnmatch
import json
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone

import boto3
import botocore.session
import pytest

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.local.source.seed import seed

OBJECT, BUCKET, SOURCE, SOURCE_BUCKET = "object", "bucket", "source", "source_bucket"
SECRET, KEY, FUNCTION = "secret", "key", "function"

#: API operation -> the IAM actions it needs, each on a kind of resource. The lake buckets are
#: encrypted with the pipeline's KMS key (tf/s3.tf), so object writes need kms:GenerateDataKey and
#: reads kms:Decrypt; multipart uploads need both (S3's documentation). A read that may miss
#: (HeadObject, GetObject, the source of a copy) answers 404 only to a role that may list the
#: bucket, and 403 otherwise, which the code would take for an outage instead of "not there".
ACTIONS = {
    ("s3", "PutObject"): [("s3:PutObject", OBJECT), ("kms:GenerateDataKey", KEY)],
    ("s3", "GetObject"): [("s3:GetObject", OBJECT), ("s3:ListBucket", BUCKET), ("kms:Decrypt", KEY)],
    ("s3", "HeadObject"): [("s3:GetObject", OBJECT), ("s3:ListBucket", BUCKET)],
    ("s3", "ListObjectsV2"): [("s3:ListBucket", BUCKET)],
    ("s3", "CopyObject"): [("s3:GetObject", SOURCE), ("s3:ListBucket", SOURCE_BUCKET), ("s3:PutObject", OBJECT),
                           ("kms:Decrypt", KEY), ("kms:GenerateDataKey", KEY)],
    ("s3", "CreateMultipartUpload"): [("s3:PutObject", OBJECT), ("kms:GenerateDataKey", KEY), ("kms:Decrypt", KEY)],
    ("s3", "UploadPart"): [("s3:PutObject", OBJECT), ("kms:GenerateDataKey", KEY), ("kms:Decrypt", KEY)],
    ("s3", "UploadPartCopy"): [("s3:GetObject", SOURCE), ("s3:ListBucket", SOURCE_BUCKET), ("s3:PutObject", OBJECT),
                               ("kms:Decrypt", KEY), ("kms:GenerateDataKey", KEY)],
    ("s3", "CompleteMultipartUpload"): [("s3:PutObject", OBJECT), ("kms:GenerateDataKey", KEY),
                                        ("kms:Decrypt", KEY)],
    ("s3", "AbortMultipartUpload"): [("s3:AbortMultipartUpload", OBJECT)],
    ("s3", "ListParts"): [("s3:ListMultipartUploadParts", OBJECT)],
    ("secretsmanager", "GetSecretValue"): [("secretsmanager:GetSecretValue", SECRET), ("kms:Decrypt", KEY)],
    # The processor's fan-out (contract §4 "Parts"): an asynchronous invocation of its own function per part.
    ("lambda", "Invoke"): [("lambda:InvokeFunction", FUNCTION)],
}
#: Calls a recorded call may be followed by on a path this test does not take (adapters/s3.py):
#: upload_file_create_only aborts a multipart upload whose parts or complete failed; a conditional
#: write that meets a lasting 409, or an ingest whose key is taken (s3.holds), HEADs the key; a copy
#: of an original over s3.COPY_THRESHOLD (5 GiB) goes in parts, aborted when it fails.
_COPY_IN_PARTS = [("s3", "CreateMultipartUpload"), ("s3", "UploadPartCopy"), ("s3", "CompleteMultipartUpload"),
                  ("s3", "AbortMultipartUpload")]
IMPLIED = {("s3", "CreateMultipartUpload"): [("s3", "AbortMultipartUpload")],
           ("s3", "PutObject"): [("s3", "HeadObject")], ("s3", "CompleteMultipartUpload"): [("s3", "HeadObject")],
           ("s3", "CopyObject"): [("s3", "HeadObject"), *_COPY_IN_PARTS],
           ("s3", "UploadPartCopy"): [("s3", "HeadObject"), ("s3", "CopyObject"), *_COPY_IN_PARTS]}


class Recorder:
    """Every call made through the recording botocore session while a stage is named, per stage."""

    def __init__(self):
        self.stage: str | None = None
        self.calls: dict[str, set[tuple]] = defaultdict(set)

    def __call__(self, params, model, **_):
        if self.stage is None:
            return
        source = params.get("CopySource")
        if isinstance(source, str):
            source_bucket, _, source_key = source.lstrip("/").partition("/")
            source = {"Bucket": source_bucket, "Key": source_key}
        self.calls[self.stage].add((model.service_model.service_name, model.name, params.get("Bucket"),
                                    params.get("Key"), (source or {}).get("Bucket"), (source or {}).get("Key"),
                                    params.get("SecretId"), params.get("FunctionName")))

    @contextmanager
    def stage_calls(self, stage: str):
        self.stage = stage
        try:
            yield
        finally:
            self.stage = None

    def operations(self, stage: str) -> set[str]:
        return {call[1] for call in self.calls[stage]}


@pytest.fixture
def recorder(aws, monkeypatch):
    """Every botocore session (the adapters build their clients on one each) is one with the
    recording hook; s3.client() rebuilt on it."""
    session = botocore.session.get_session()
    calls = Recorder()
    session.register("before-parameter-build", calls)
    monkeypatch.setattr(botocore.session, "get_session", lambda env_vars=None: session)
    s3._client.cache_clear()
    yield calls
    s3._client.cache_clear()


def _allowed(statements: list[dict], action: str, resource: str) -> bool:
    """IAM's evaluation for one action on one resource: an unconditional Allow and no Deny."""
    def matches(statement):
        assert not {"NotAction", "NotResource"} & set(statement), "this evaluator does not read NotAction/NotResource"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        return (any(fnmatch.fnmatch(action.lower(), a.lower()) for a in actions)
                and any(fnmatch.fnmatchcase(resource, r) for r in resources))
    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and "Condition" not in s and matches(s) for s in statements)


def _statements(role: str) -> list[dict]:
    iam = boto3.client("iam")
    statements = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        statements += document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]]
    assert not iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"], "only inline policies are read"
    return statements


def _required(call: tuple, lake_names: dict[str, str], secret_arns: dict[str, str], key_arn: str,
              function_arns: dict[str, str]):
    """(action, resource ARN) pairs one recorded call needs, on the deployed resources."""
    service, operation, bucket, key, source_bucket, source_key, secret_id, function = call
    assert (service, operation) in ACTIONS, f"{service}:{operation} is not mapped to IAM actions: add it to ACTIONS"
    for name in (bucket, source_bucket):
        assert name is None or name in lake_names, f"{operation} reached bucket {name!r}, not one of the lake's"
    resources = {
        OBJECT: bucket and f"arn:aws:s3:::{lake_names[bucket]}/{key}",
        BUCKET: bucket and f"arn:aws:s3:::{lake_names[bucket]}",
        SOURCE: source_bucket and f"arn:aws:s3:::{lake_names[source_bucket]}/{source_key}",
        SOURCE_BUCKET: source_bucket and f"arn:aws:s3:::{lake_names[source_bucket]}",
        SECRET: secret_id and secret_arns[secret_id],
        KEY: key_arn,
        FUNCTION: function and function_arns[function],
    }
    for action, kind in ACTIONS[(service, operation)]:
        assert resources[kind], f"{operation} without its {kind}"
        yield action, resources[kind]


def _secret_document(url: str) -> str:
    """The RDS-shaped JSON an operator puts into a secret (contract §5), for a test database URL."""
    parts = parse_url(url)
    return json.dumps({"host": parts["host"], "port": parts["port"], "username": parts["user"],
                       "password": parts["password"], "dbname": parts["database"]})


def test_every_call_each_handler_makes_is_granted_to_its_role(deployment, source, warehouse_url, buckets,
                                                              landing_bucket, recorder, monkeypatch):
    from totesys_etl import failures
    from totesys_etl.errors import LakeUnavailable
    from totesys_etl.ingest.handler import lambda_handler as ingest
    from totesys_etl.load.handler import lambda_handler as load
    from totesys_etl.process.handler import lambda_handler as process

    terraform, outputs = deployment.terraform, deployment.outputs
    secrets = boto3.client("secretsmanager")
    secret_arns = {}
    for name, url in ((terraform.names["source_secret"], source.reader_url),
                      (terraform.names["warehouse_secret"], warehouse_url)):
        secrets.put_secret_value(SecretId=name, SecretString=_secret_document(url))
        secret_arns[name] = secrets.describe_secret(SecretId=name)["ARN"]
    # As in Lambda (tf/lambda.tf): credentials from the deployed secrets, never a URL.
    for name, value in (("TOTESYS_SOURCE_SECRET", terraform.names["source_secret"]),
                        ("TOTESYS_WAREHOUSE_SECRET", terraform.names["warehouse_secret"]),
                        ("TOTESYS_INGEST_BUCKET", buckets[0]), ("TOTESYS_PROCESSED_BUCKET", buckets[1])):
        monkeypatch.setenv(name, value)
    # Every file but the smallest goes up in parts, as files over 64 MB do in production; and a copy to
    # quarantine of more than 10 bytes (the processor's of "not a manifest") in parts, as one over 5 GiB.
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 1024)
    monkeypatch.setattr(s3, "COPY_THRESHOLD", 10)
    seed(source.admin_url, orders=200, seed=21)
    raw = boto3.client("s3")

    # The first run in parts (contract §4): the processor hands them to its own function (moto queues
    # the invocations and runs nothing), then, with no fan-out, processes them itself.
    monkeypatch.setenv("TOTESYS_PART_ROWS", "100")
    monkeypatch.setenv("TOTESYS_WHOLE_RUN_ROWS", "1")  # fanned out: a run this small is otherwise handled whole
    with recorder.stage_calls("ingest"):
        ingest({}, None)
    process_function = f"{terraform.prefix}-process"
    with recorder.stage_calls("process"), monkeypatch.context() as lambda_env:
        lambda_env.setenv("TOTESYS_FANOUT", "lambda")
        lambda_env.setenv("AWS_LAMBDA_FUNCTION_NAME", process_function)
        process({}, None)
    assert lake.runs_after(buckets[1], None) == []
    with recorder.stage_calls("process"):
        process({}, None)
    [run_id] = lake.runs_after(buckets[1], None)
    # A processor that died after its Parquet, before its manifest: the rerun's uploads meet their
    # own files (412) and abort; and a corrupt ingested manifest is quarantined (a copy).
    raw.delete_object(Bucket=buckets[1], Key=lake.manifest_key(run_id))
    time.sleep(0.001)
    raw.put_object(Bucket=buckets[0], Key=lake.manifest_key(lake.run_id_at(datetime.now(timezone.utc))),
                   Body=b"not a manifest")
    with recorder.stage_calls("process"):
        process({}, None)
    # The run's parts are staged by the loader's own function, one invocation each (moto queues them
    # and runs nothing); the next sweep, with no fan-out, stages them itself and publishes the run.
    with recorder.stage_calls("load"), monkeypatch.context() as lambda_env:
        lambda_env.setenv("TOTESYS_FANOUT", "lambda")
        lambda_env.setenv("AWS_LAMBDA_FUNCTION_NAME", f"{terraform.prefix}-load")
        load({}, None)
    # A corrupt processed manifest: the loader quarantines it inside the processed bucket.
    time.sleep(0.001)
    raw.put_object(Bucket=buckets[1], Key=lake.manifest_key(lake.run_id_at(datetime.now(timezone.utc))),
                   Body=b"{")
    with recorder.stage_calls("load"):
        load({}, None)
    # Courier files (contract §9), by their S3 event and by the sweep: a file with a bad event among
    # good ones (rows held back into the processed bucket) and one that is not JSON (copied aside).
    good = (b'{"event_id": "e1", "sales_order_id": 1, "status": "delivered", "at": "2024-01-02T03:04:05Z", '
            b'"city": "Leeds", "courier": "DPD"}\n{"x": 1}\n')
    raw.put_object(Bucket=landing_bucket, Key="c/good.jsonl", Body=good)
    raw.put_object(Bucket=landing_bucket, Key="c/bad.json", Body=b"not json")
    raw.put_object(Bucket=landing_bucket, Key="c/swept.json", Body=b"[]")
    with recorder.stage_calls("ingest"):
        ingest({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                             "s3": {"bucket": {"name": landing_bucket}, "object": {"key": k}}}
                            for k in ("c/good.jsonl", "c/bad.json")]}, None)
        ingest({}, None)
    # A failing handler keeps its failure for `status` in the bucket it writes (failures.record).
    for stage in ("ingest", "process", "load"):
        with recorder.stage_calls(stage):
            failures.record(stage, LakeUnavailable(f"a {stage} failure kept for status"))
        bucket = buckets[0] if stage == "ingest" else buckets[1]
        assert failures.newest(bucket, stage)["reason"] == f"a {stage} failure kept for status"

    # The paths above were taken (otherwise this test would check less than it says).
    assert {"GetSecretValue", "CreateMultipartUpload", "PutObject", "ListObjectsV2", "CopyObject",
            "GetObject", "HeadObject"} <= recorder.operations("ingest")
    assert {"CreateMultipartUpload", "CompleteMultipartUpload", "AbortMultipartUpload",
            "UploadPartCopy", "GetObject", "Invoke"} <= recorder.operations("process")
    assert {"GetSecretValue", "CopyObject", "PutObject", "ListObjectsV2", "Invoke"} <= recorder.operations("load")

    lake_names = {buckets[0]: deployment.buckets["ingested"], buckets[1]: deployment.buckets["processed"],
                  landing_bucket: deployment.outputs["landing_bucket"]}
    lambdas = boto3.client("lambda")
    function_arns = {name: lambdas.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
                     for name in (process_function, f"{terraform.prefix}-load")}
    missing = {}
    for stage in ("ingest", "process", "load"):
        statements = _statements(f"{terraform.prefix}-{stage}")
        calls = set(recorder.calls[stage])
        calls |= {(*implied, *call[2:]) for call in recorder.calls[stage] for implied in IMPLIED.get(call[:2], [])}
        for call in sorted(calls, key=str):
            for action, resource in _required(call, lake_names, secret_arns, outputs["kms_key_arn"], function_arns):
                if not _allowed(statements, action, resource):
                    missing.setdefault((stage, action, call[1]), resource)  # one example each
    assert not missing, "calls the handlers make that their roles' policies lack:\n" + "\n".join(
        f"  {stage}: {action} for {operation}, e.g. on {resource}" for (stage, action, operation), resource
        in sorted(missing.items()))
