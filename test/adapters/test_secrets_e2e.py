"""The deployed credential path (contract §5, issue 26): the ingest and load handlers read their
databases' credentials from Secrets Manager (moto's server) with no URL set, against real
PostgreSQL, and no password or AWS secret key appears in anything they print or log.

The handlers run in a child process, as a Lambda runs them, with INFO logs, so every line they
could write is captured; the checks first confirm that lines were written at all.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess  # nosec B404
import sys
import uuid

import boto3
import pytest

from totesys_etl.local.services import admin
from totesys_etl.local.source.seed import seed

HANDLERS = """
import json
from totesys_etl.ingest.handler import lambda_handler as ingest
from totesys_etl.process.handler import lambda_handler as process
from totesys_etl.load.handler import lambda_handler as load
for handler in (ingest, process, load):
    print(json.dumps(handler({}, None), default=str), flush=True)
"""


def unique(prefix: str) -> str:
    """A secret name no other test on the session's shared moto server uses."""
    return f"{prefix}{uuid.uuid4().hex}"


def _secret(name: str, cluster, database: str, user: str, password: str) -> str:
    value = {"host": "127.0.0.1", "port": cluster.port, "username": user, "password": password, "dbname": database}
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))
    return name


@pytest.fixture
def lambda_env(source, warehouse_url, buckets, aws, postgres):
    """Only what the deployed functions get: secret ids, buckets, AWS settings; no database URL."""
    seed(source.admin_url, orders=40, seed=3)
    warehouse = warehouse_url.rsplit("/", 1)[1].split("?")[0]
    env = {"TOTESYS_SOURCE_SECRET": _secret(unique("totesys-src-"), postgres, source.name, admin.READER_ROLE,
                                            postgres.reader_password),
           "TOTESYS_WAREHOUSE_SECRET": _secret(unique("totesys-dw-"), postgres, warehouse, "postgres",
                                               postgres.password),
           "TOTESYS_INGEST_BUCKET": buckets[0], "TOTESYS_PROCESSED_BUCKET": buckets[1],
           "TOTESYS_LOG_LEVEL": "INFO", "AWS_ENDPOINT_URL": aws.endpoint,
           "AWS_DEFAULT_REGION": os.environ["AWS_DEFAULT_REGION"], "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": f"aws-{secrets.token_urlsafe(12)}"}
    credentials = {"reader password": postgres.reader_password, "warehouse password": postgres.password,
                   "AWS secret key": env["AWS_SECRET_ACCESS_KEY"]}
    return env, credentials


def _handlers(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "AWS_"))}
    return subprocess.run([sys.executable, "-c", HANDLERS], env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)  # nosec B603


def _leaks(output: str, credentials: dict) -> list[str]:
    return [name for name, value in credentials.items() if value in output]


def test_the_handlers_read_their_credentials_from_secrets_and_never_show_them(lambda_env, source, warehouse_url,
                                                                              run_sql):
    env, credentials = lambda_env
    done = _handlers(env)
    assert done.returncode == 0, done.stderr[-2000:]
    ingest, process, load = (json.loads(line) for line in done.stdout.splitlines())
    assert ingest["files"] == 11 and [r["run_id"] for r in load["runs"]] == [ingest["run_id"]]
    for fact, table in (("fact_sales_order", "sales_order"), ("fact_payment", "payment")):
        assert run_sql(warehouse_url, f"SELECT count(*) FROM {fact}") == run_sql(
            source.admin_url, f"SELECT count(*) FROM {table}")
    logged = [json.loads(line) for line in done.stderr.splitlines()]
    assert {line["stage"] for line in logged} >= {"ingest", "process", "load"}  # the check below saw real logs
    assert "run loaded" in [line["message"] for line in logged]
    assert _leaks(done.stdout + done.stderr, credentials) == []


def test_a_wrong_warehouse_password_in_the_secret_fails_the_load_without_showing_it(lambda_env, postgres):
    env, credentials = lambda_env
    wrong = f"Wr0ng-{secrets.token_urlsafe(8)}"
    warehouse = json.loads(boto3.client("secretsmanager").get_secret_value(
        SecretId=env["TOTESYS_WAREHOUSE_SECRET"])["SecretString"])
    env["TOTESYS_WAREHOUSE_SECRET"] = _secret(unique("totesys-dw-bad-"), postgres, warehouse["dbname"], "postgres",
                                              wrong)
    failed = _handlers(env)
    assert failed.returncode == 1
    errors = [json.loads(line) for line in failed.stderr.splitlines() if line.startswith("{")]
    assert [e["error_kind"] for e in errors if e["level"] == "ERROR"] == ["warehouse_unavailable"], failed.stderr
    assert _leaks(failed.stdout + failed.stderr, {**credentials, "wrong password": wrong}) == []
