"""The Lambda entry point: its contract, its failures (one ERROR line, no credentials), crash points."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import boto3
import pytest

from totesys_etl import lake
from totesys_etl.errors import SecretError, SourceUnavailable
from totesys_etl.ingest.handler import lambda_handler
from totesys_etl.local.services.admin import READER_ROLE
from totesys_etl.local.services.servers import free_port
from totesys_etl.schema import SOURCE_TABLES

SCHEDULED_EVENT = {"version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
                   "time": "2026-11-24T07:00:00Z", "resources": ["arn:aws:events:eu-west-2:1:rule/ingest"],
                   "detail": {}}


def test_handler_with_an_empty_event_and_no_context(totesys, pipeline_env, ingested):
    summary = lambda_handler({}, None)
    assert set(summary) == {"stage", "run_id", "rows", "files", "quarantined", "seconds"}
    assert summary["stage"] == "ingest" and lake.RUN_ID.fullmatch(summary["run_id"])
    assert summary["rows"] == {t.name: 3 for t in SOURCE_TABLES} and summary["files"] == 11
    assert isinstance(summary["seconds"], float)
    assert ingested.manifest(summary["run_id"])["rows"] == summary["rows"]
    again = lambda_handler(SCHEDULED_EVENT, None)
    assert again["files"] == 0 and again["run_id"] > summary["run_id"]


def _error_lines(logs):
    return [line for line in logs if line["level"] == "ERROR"]


def test_an_unreachable_source_fails_with_one_error_line_and_no_password(totesys, pipeline_env, ingested,
                                                                         logs, monkeypatch):
    url = f"postgresql://reader:Sup3rSecret@127.0.0.1:{free_port()}/totesys"
    monkeypatch.setenv("TOTESYS_SOURCE_URL", url)
    with pytest.raises(SourceUnavailable) as error:
        lambda_handler({}, None)
    assert "Sup3rSecret" not in str(error.value) and "127.0.0.1" in str(error.value)
    [line] = _error_lines(logs)
    assert line["error_kind"] == "source_unavailable" and "Sup3rSecret" not in json.dumps(logs)
    [kept] = ingested.keys()  # no run: only the failure, kept for `status`, without the password
    assert kept.startswith("_state/failures/ingest/") and b"Sup3rSecret" not in ingested.body(kept)


def test_a_wrong_password_names_the_database_not_the_password(totesys, source, postgres, pipeline_env, logs,
                                                              monkeypatch):
    monkeypatch.setenv("TOTESYS_SOURCE_URL", postgres.url(source.name, READER_ROLE, "Wr0ngPass"))
    with pytest.raises(SourceUnavailable, match=source.name) as error:
        lambda_handler({}, None)
    assert "Wr0ngPass" not in str(error.value) and "Wr0ngPass" not in json.dumps(logs)


def test_a_query_the_source_refuses_fails_the_run_before_any_manifest(totesys, pipeline_env, ingested, logs):
    totesys.run(f"REVOKE SELECT ON payment FROM {READER_ROLE}")
    with pytest.raises(SourceUnavailable, match="permission denied for table payment"):
        lambda_handler({}, None)
    [line] = _error_lines(logs)
    assert line["error_kind"] == "source_unavailable" and lake.RUN_ID.fullmatch(line["run_id"])
    assert ingested.keys("_runs/") == []
    [kept] = ingested.keys("_state/")  # only the failure, kept for `status`
    assert kept.startswith("_state/failures/ingest/")
    assert json.loads(ingested.body(kept))["reason"].endswith("permission denied for table payment")


def _secret(value: str) -> str:
    name = f"ingest-test-{uuid.uuid4().hex}"
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=value)
    return name


def test_credentials_come_from_the_secret_when_no_url_is_set(totesys, source, postgres, pipeline_env,
                                                             monkeypatch):
    secret = {"host": "127.0.0.1", "port": postgres.port, "username": "totesys_reader",
              "password": postgres.reader_password, "dbname": source.name}
    monkeypatch.delenv("TOTESYS_SOURCE_URL")
    monkeypatch.setenv("TOTESYS_SOURCE_SECRET", _secret(json.dumps(secret)))
    assert lambda_handler({}, None)["files"] == 11


@pytest.mark.parametrize("value, reason", [
    ('{"host": "h", "username": "u", "password": "Leak3dPw"}', "lacks port, dbname"),
    ("password=Leak3dPw", "not JSON"),
    (None, "ResourceNotFoundException"),
])
def test_a_missing_or_malformed_secret_is_a_clear_error_without_its_value(totesys, pipeline_env, logs,
                                                                          monkeypatch, value, reason):
    monkeypatch.delenv("TOTESYS_SOURCE_URL")
    name = _secret(value) if value else f"ingest-test-missing-{uuid.uuid4().hex}"
    monkeypatch.setenv("TOTESYS_SOURCE_SECRET", name)
    with pytest.raises(SecretError, match=reason) as error:
        lambda_handler({}, None)
    assert name in str(error.value) and "Leak3dPw" not in str(error.value)
    [line] = _error_lines(logs)
    assert line["error_kind"] == "secret_invalid" and "Leak3dPw" not in json.dumps(logs)


HANDLER = "from totesys_etl.ingest.handler import lambda_handler; lambda_handler({}, None)"


def _crash(point: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HANDLER],
        env={**os.environ, "TOTESYS_CRASH_AT": point}, capture_output=True, text=True, timeout=120)


def test_a_crash_before_the_manifest_leaves_no_run_and_the_rerun_reads_the_same_rows(totesys, pipeline_env,
                                                                                     ingested):
    assert _crash("ingest.before_manifest").returncode == 137
    assert len(ingested.table_keys()) == 11
    assert ingested.keys("_runs/") == [] and ingested.keys("_state/") == []
    rerun = lambda_handler({}, None)
    assert rerun["rows"] == {t.name: 3 for t in SOURCE_TABLES}
    assert ingested.manifest(rerun["run_id"])["previous_run_id"] is None


def test_a_crash_after_the_manifest_leaves_a_complete_run(totesys, pipeline_env, ingested):
    assert _crash("ingest.after_manifest").returncode == 137
    [key] = ingested.keys("_runs/")
    run_id = lake.run_id_of_manifest(key)
    assert ingested.keys("_state/") == []  # the manifests are the ingestor's only state
    assert len(ingested.manifest(run_id)["files"]) == 11
    nothing_new = lambda_handler({}, None)
    assert nothing_new["files"] == 0
    assert ingested.manifest(nothing_new["run_id"])["previous_run_id"] == run_id


def test_every_line_of_an_invocation_carries_its_request_id(totesys, pipeline_env, ingested, logs):
    import types

    from totesys_etl import logs as logs_module

    logs_module._cold = True
    lambda_handler({}, types.SimpleNamespace(aws_request_id="req-42"))
    lambda_handler({}, types.SimpleNamespace(aws_request_id="req-43"))
    first = [line for line in logs if line.get("request_id") == "req-42"]
    second = [line for line in logs if line.get("request_id") == "req-43"]
    assert len(first) >= 12 and all(line["cold_start"] is True for line in first)  # 11 tables + the run
    assert len(second) >= 12 and all(line["cold_start"] is False for line in second)
