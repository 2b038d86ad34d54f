"""tf/ applied for real against the session's moto server, checked with boto3, replanned.

moto checks wiring, not behaviour (IAM is not enforced, schedules never fire), so this test
asserts the wiring: buckets locked down, functions on their handlers with contract §5 settings,
schedules and bucket notifications pointing at the right functions with permission to invoke
them, least-privilege policies, alarms publishing to the topic, Glue tables matching the schema.
The deployment (conftest.py) is shared with test_iam_calls.py and destroyed after the session.
"""
from __future__ import annotations

import json

import boto3

from totesys_etl.schema import API_FACTS, EVENT_FACTS, FACTS, STATE_TABLES

STAGES = ("ingest", "process", "load")
ERROR_KINDS = ("source_unavailable", "warehouse_unavailable", "lake_unavailable", "secret_invalid",
               "quarantined_file", "quarantined_manifest", "quarantined_rows", "run_id_collision", "load_failed",
               "configuration", "pipeline_failed", "fx_unavailable",
               # change data capture (contract §10)
               "cdc_slot_lag", "cdc_slot_lost", "cdc_unchanged_value", "cdc_truncate", "source_schema_changed")


def _policy(iam, role: str) -> list[dict]:
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert names == [role]
    document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    return document["Statement"]


def _grants(statements: list[dict]) -> set[tuple[str, str]]:
    """(action, resource) pairs a policy allows."""
    pairs = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        pairs |= {(a, r) for a in actions for r in resources}
    return pairs


def test_apply_check_replan(deployment, aws):
    terraform, outputs = deployment.terraform, deployment.outputs
    prefix = terraform.prefix
    s3, lam, iam = boto3.client("s3"), boto3.client("lambda"), boto3.client("iam")
    events, cloudwatch, logs = boto3.client("events"), boto3.client("cloudwatch"), boto3.client("logs")
    sns, glue, secrets = boto3.client("sns"), boto3.client("glue"), boto3.client("secretsmanager")

    # The lake: versioned, encrypted with the pipeline's key, no public access.
    key_arn = outputs["kms_key_arn"]
    buckets = {"ingested": outputs["ingested_bucket"], "processed": outputs["processed_bucket"]}
    for bucket in buckets.values():
        assert bucket.startswith(prefix)
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        assert "aws:SecureTransport" in s3.get_bucket_policy(Bucket=bucket)["Policy"]
        # Parts of uploads that never completed are removed after a day; objects never expire.
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert [(r["Status"], r["AbortIncompleteMultipartUpload"]) for r in rules] == [
            ("Enabled", {"DaysAfterInitiation": 1})]
        assert not any("Expiration" in r or "NoncurrentVersionExpiration" in r for r in rules)

    # The functions: handlers, settings (contract §5), own role, our layer, /tmp as sized.
    tfvars = json.loads((terraform.workdir / "test.auto.tfvars.json").read_text())
    functions = {}
    for stage in STAGES:
        config = lam.get_function_configuration(FunctionName=outputs["function_names"][stage])
        functions[stage] = config
        assert config["Handler"] == f"totesys_etl.{stage}.handler.lambda_handler"
        assert config["Runtime"] in ("python3.11", "python3.12")
        assert config["Role"].endswith(f":role/{prefix}-{stage}")
        assert config["Environment"]["Variables"] == {
            "TOTESYS_INGEST_BUCKET": buckets["ingested"], "TOTESYS_PROCESSED_BUCKET": buckets["processed"],
            "TOTESYS_LANDING_BUCKET": outputs["landing_bucket"],
            "TOTESYS_SOURCE_SECRET": terraform.names["source_secret"],
            "TOTESYS_WAREHOUSE_SECRET": terraform.names["warehouse_secret"], "TOTESYS_LOG_LEVEL": "INFO",
            "TOTESYS_FX_API_URL": "",  # var.fx_api_url's default: the FX source off
            "TOTESYS_SOURCE_MODE": "poll", "TOTESYS_CDC_MAX_LAG_MB": "1024",  # contract §10's defaults
            # contract §4 "Parts": the processor and loader fan out, by invoking themselves (ADR 0006)
            "TOTESYS_PART_ROWS": "2000000", "TOTESYS_WHOLE_RUN_ROWS": "50000000",
            "TOTESYS_FANOUT": "lambda" if stage in ("process", "load") else ""}
        assert [layer["Arn"].split(":")[-2] for layer in config["Layers"]] == [f"{prefix}-dependencies"]
        assert config["EphemeralStorage"] == {"Size": tfvars["lambda_ephemeral_storage_mb"][stage]}

    # Asynchronous failures: no retries by default (the schedule or the sweep runs the work again),
    # a bounded event age, and a failed event kept in the encrypted failed-events queue, never mailed.
    sqs = boto3.client("sqs")
    queue_url = outputs["failed_events_queue_url"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert queue["KmsMasterKeyId"] in (key_arn, key_arn.split("/")[-1])
    assert queue["MessageRetentionPeriod"] == "1209600"
    for stage in STAGES:
        invoke = lam.get_function_event_invoke_config(FunctionName=functions[stage]["FunctionName"])
        assert (invoke["MaximumRetryAttempts"], invoke["MaximumEventAgeInSeconds"]) == (0, 3600)
        assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == queue["QueueArn"]

    # Manifests starting the next stage, with permission to invoke it.
    for bucket, stage in (("ingested", "process"), ("processed", "load")):
        notification = s3.get_bucket_notification_configuration(Bucket=buckets[bucket])
        [target] = notification["LambdaFunctionConfigurations"]
        assert target["LambdaFunctionArn"] == functions[stage]["FunctionArn"]
        assert target["Events"] == ["s3:ObjectCreated:*"]
        rules = {r["Name"]: r["Value"] for r in target["Filter"]["Key"]["FilterRules"]}
        assert {k.lower(): v for k, v in rules.items()} == {"prefix": "_runs/", "suffix": ".json"}
        statements = json.loads(lam.get_policy(FunctionName=functions[stage]["FunctionName"])["Policy"])["Statement"]
        from_s3 = [s for s in statements if s["Principal"] == {"Service": "s3.amazonaws.com"}]
        assert [s["Condition"]["ArnLike"]["AWS:SourceArn"] for s in from_s3] == [f"arn:aws:s3:::{buckets[bucket]}"]
    assert not s3.get_bucket_notification_configuration(Bucket=buckets["ingested"]).get("QueueConfigurations")

    # Courier files (contract §9): a private, versioned, encrypted landing bucket whose every new
    # object invokes the ingest function; files expire once long taken.
    landing = outputs["landing_bucket"]
    assert landing.startswith(prefix) and s3.get_bucket_versioning(Bucket=landing)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=landing)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert all(s3.get_public_access_block(Bucket=landing)["PublicAccessBlockConfiguration"].values())
    assert "aws:SecureTransport" in s3.get_bucket_policy(Bucket=landing)["Policy"]
    [expiry] = s3.get_bucket_lifecycle_configuration(Bucket=landing)["Rules"]
    assert expiry["Expiration"] == {"Days": 30}
    assert expiry["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    [target] = s3.get_bucket_notification_configuration(Bucket=landing)["LambdaFunctionConfigurations"]
    assert target["LambdaFunctionArn"] == functions["ingest"]["FunctionArn"] and "Filter" not in target
    statements = json.loads(lam.get_policy(FunctionName=functions["ingest"]["FunctionName"])["Policy"])["Statement"]
    assert [s["Condition"]["ArnLike"]["AWS:SourceArn"] for s in statements
            if s["Principal"] == {"Service": "s3.amazonaws.com"}] == [f"arn:aws:s3:::{landing}"]

    # Schedules: ingest every 5 minutes; the sweep invokes the processor and the loader.
    schedules = {"ingest": ("rate(5 minutes)", ["ingest"]), "sweep": ("rate(15 minutes)", ["process", "load"])}
    for rule, (expression, stages) in schedules.items():
        described = events.describe_rule(Name=f"{prefix}-{rule}")
        assert described["ScheduleExpression"] == expression and described["State"] == "ENABLED"
        targets = events.list_targets_by_rule(Rule=f"{prefix}-{rule}")["Targets"]
        assert sorted(t["Arn"] for t in targets) == sorted(functions[s]["FunctionArn"] for s in stages)
        for stage in stages:
            statements = json.loads(lam.get_policy(FunctionName=functions[stage]["FunctionName"])["Policy"])
            assert any(s["Principal"] == {"Service": "events.amazonaws.com"}
                       and s["Condition"]["ArnLike"]["AWS:SourceArn"] == described["Arn"]
                       for s in statements["Statement"])

    # Least privilege: each role reaches only its own secret, buckets and log group.
    source_arn = secrets.describe_secret(SecretId=terraform.names["source_secret"])["ARN"]
    warehouse_arn = secrets.describe_secret(SecretId=terraform.names["warehouse_secret"])["ARN"]
    assert secrets.describe_secret(SecretId=source_arn)["KmsKeyId"] in (key_arn, key_arn.split("/")[-1])
    ingested_arn, processed_arn = (f"arn:aws:s3:::{buckets[b]}" for b in ("ingested", "processed"))
    grants = {stage: _grants(_policy(iam, f"{prefix}-{stage}")) for stage in STAGES}
    secret_reads = {stage: {r for a, r in grants[stage] if a == "secretsmanager:GetSecretValue"} for stage in STAGES}
    assert secret_reads == {"ingest": {source_arn}, "process": set(), "load": {warehouse_arn}}
    writes = {stage: {r for a, r in grants[stage] if a == "s3:PutObject"} for stage in STAGES}
    # the ingest may write quarantine/: a bad FX API answer, a courier file or events held back
    assert writes == {"ingest": {f"{ingested_arn}/*", f"{processed_arn}/quarantine/*"},
                      "process": {f"{processed_arn}/*"},
                      "load": {f"{processed_arn}/quarantine/*", f"{processed_arn}/_state/failures/load/*"}}
    aborts = {stage: {r for a, r in grants[stage] if a == "s3:AbortMultipartUpload"} for stage in STAGES}
    assert aborts == {"ingest": {f"{ingested_arn}/*", f"{processed_arn}/quarantine/*"},
                      "process": {f"{processed_arn}/*"}, "load": {f"{processed_arn}/quarantine/*"}}
    landing_arn = f"arn:aws:s3:::{outputs['landing_bucket']}"
    reads = {stage: {r for a, r in grants[stage] if r.startswith(landing_arn)} for stage in STAGES}
    assert reads == {"ingest": {landing_arn, f"{landing_arn}/*"}, "process": set(), "load": set()}
    assert not any(r.startswith(landing_arn) for a, r in grants["ingest"] if a != "s3:ListBucket"
                   and a != "s3:GetObject")  # the pipeline never writes the landing bucket
    assert ("s3:GetObject", f"{ingested_arn}/*") not in grants["load"]
    assert not any(a.startswith("s3:Delete") or a in ("s3:*", "*") for stage in STAGES for a, _ in grants[stage])
    assert all({r for a, r in grants[stage] if a.startswith("sqs:")} == {queue["QueueArn"]}
               and {a for a, _ in grants[stage] if a.startswith("sqs:")} == {"sqs:SendMessage"} for stage in STAGES)
    for stage in STAGES:
        group = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{prefix}-{stage}")["logGroups"]
        assert [g["retentionInDays"] for g in group] == [365]
        assert {r for a, r in grants[stage] if a == "logs:PutLogEvents"} == {f"{group[0]['arn'].removesuffix(':*')}:*"}

    # Alarms: ERROR lines per stage and per error_kind, failed invocations, silence; all to the topic.
    topic = outputs["alarm_topic_arn"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", "alerts@example.com")]
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]}
    expected = ({f"{prefix}-{s}-errors" for s in STAGES} | {f"{prefix}-{s}-failed-invocations" for s in STAGES}
                | {f"{prefix}-error-{k}" for k in ERROR_KINDS} | {f"{prefix}-ingest-silent"})
    assert set(alarms) == expected
    assert all(a["AlarmActions"] == [topic] for a in alarms.values())
    # Only the silence alarm mails when it clears: an error alarm's OK is no news.
    assert {name for name, a in alarms.items() if a["OKActions"]} == {f"{prefix}-ingest-silent"}
    assert alarms[f"{prefix}-ingest-silent"]["OKActions"] == [topic]
    kind_alarm = alarms[f"{prefix}-error-load_failed"]
    assert kind_alarm["Dimensions"] == [{"Name": "error_kind", "Value": "load_failed"}]
    silent = alarms[f"{prefix}-ingest-silent"]
    assert silent["EvaluationPeriods"] == 2 and silent["TreatMissingData"] == "breaching"
    silent_metrics = {m["Id"]: m for m in silent["Metrics"]}
    assert silent_metrics["invocations"]["MetricStat"]["Period"] == 300
    assert silent_metrics["invocations"]["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": functions["ingest"]["FunctionName"]}]
    for stage in STAGES:
        filters = logs.describe_metric_filters(logGroupName=f"/aws/lambda/{prefix}-{stage}")["metricFilters"]
        transformations = {f["metricTransformations"][0]["metricName"]: f for f in filters}
        assert set(transformations) == {f"{stage}_errors", "errors_by_kind"}
        assert all('$.level = "ERROR"' in f["filterPattern"] for f in filters)
        assert alarms[f"{prefix}-{stage}-errors"]["MetricName"] == f"{stage}_errors"

    # Glue: one table per Parquet prefix of the processed bucket, columns from the declarations.
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName=outputs["glue_database"])["TableList"]}
    assert set(tables) == {"dim_date", *(t.name for t in (*FACTS, *API_FACTS, *EVENT_FACTS)),
                           *(t.name for t in STATE_TABLES)}
    for fact in (*FACTS, *API_FACTS, *EVENT_FACTS):
        descriptor = tables[fact.name]["StorageDescriptor"]
        assert [c["Name"] for c in descriptor["Columns"]] == fact.arrow_schema.names
        assert descriptor["Location"] == f"s3://{buckets['processed']}/{fact.name}/"
        assert [k["Name"] for k in tables[fact.name]["PartitionKeys"]] == ["run_year", "run_month", "run_day"]
        assert tables[fact.name]["Parameters"]["storage.location.template"] == (
            f"s3://{buckets['processed']}/{fact.name}/year=${{run_year}}/month=${{run_month}}/day=${{run_day}}")
    for table in tables.values():  # Athena refuses a table whose partition key repeats a column
        names = [c["Name"].lower() for c in table["StorageDescriptor"]["Columns"] + table["PartitionKeys"]]
        assert len(names) == len(set(names)), table["Name"]

    # What moto stored is what tf/ declares: a second plan has nothing to do.
    assert terraform("plan", "-detailed-exitcode", ok=(0, 2)).returncode == 0, "plan after apply shows drift"
