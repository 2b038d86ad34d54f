"""`totesys-etl tick` end to end, as other tools drive it: only the contract §5 variables, a read-only
source role, real PostgreSQL, moto's server, and the bucket notifications (issue 15)."""
import json
import os
import subprocess
import sys
from urllib.parse import quote_plus

import boto3
import pytest

from totesys_etl import lake
from totesys_etl.local.drive.notifications import queue_name
from totesys_etl.local.source.seed import seed
from totesys_etl.local.source.simulate import simulate
from totesys_etl.schema import STAR_TABLES

pytestmark = pytest.mark.slow


def cli(env, *args, extra=None):
    """The command in a subprocess with the contract §5 variables in `env` (the fixtures removed every
    other TOTESYS_/AWS_ variable; the rest of the environment carries coverage's subprocess hook)."""
    return subprocess.run([sys.executable, "-m", "totesys_etl", *args], env={**os.environ, **env, **(extra or {})},
                          capture_output=True, text=True, timeout=600)


def star_digest(run_sql, url):
    """Every star table's rows, surrogate keys included, as one digest per table."""
    return {t.name: run_sql(url, f"SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {t.name} x")[0]
            for t in STAR_TABLES}


def counts(run_sql, url, *tables):
    return {t: run_sql(url, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


@pytest.fixture
def seeded(pipeline_env, source, monkeypatch):
    """The contract §5 variables over a seeded source, with a settle period short enough for marks to move."""
    seed(source.admin_url, orders=300, seed=7, awkward=True)   # the extremes, end to end
    monkeypatch.setenv("TOTESYS_SETTLE_SECONDS", "2")
    return {**pipeline_env, "TOTESYS_SETTLE_SECONDS": "2"}


def test_first_run_changes_and_a_quiet_rerun(seeded, source, warehouse_url, run_sql, oracle_module):
    first = cli(seeded, "tick")
    assert first.returncode == 0, first.stderr
    assert "ingest" in first.stdout and "load" in first.stdout
    source_counts = counts(run_sql, source.admin_url, "sales_order", "purchase_order", "payment")
    assert counts(run_sql, warehouse_url, "fact_sales_order", "fact_purchase_order", "fact_payment") == {
        "fact_sales_order": source_counts["sales_order"], "fact_purchase_order": source_counts["purchase_order"],
        "fact_payment": source_counts["payment"]}
    assert cli(seeded, "reconcile").returncode == 0

    simulate(source.admin_url, changes=60, seed=3)
    second = cli(seeded, "tick")
    assert second.returncode == 0, second.stderr
    reconciled = cli(seeded, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout
    versions = run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0]
    assert versions > source_counts["sales_order"]  # updated orders keep their history
    verdict = oracle_module.check(source.admin_url, warehouse_url, seeded["TOTESYS_INGEST_BUCKET"])
    assert verdict.problems == [] and verdict.rows_checked > versions  # and the independent oracle agrees

    before = star_digest(run_sql, warehouse_url)
    quiet = cli(seeded, "tick")
    assert quiet.returncode == 0, quiet.stderr
    assert star_digest(run_sql, warehouse_url) == before


def test_a_quiet_tick_writes_no_table_file(seeded):
    assert cli(seeded, "tick").returncode == 0
    s3 = boto3.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=seeded["TOTESYS_INGEST_BUCKET"]).get("Contents", [])}
    assert cli(seeded, "tick").returncode == 0
    after = {o["Key"] for o in s3.list_objects_v2(Bucket=seeded["TOTESYS_INGEST_BUCKET"]).get("Contents", [])}
    new = after - keys
    assert new and all(k.startswith("_runs/") for k in new)  # its manifest, no table file


def _redeliver(env):
    """Send every manifest's ObjectCreated notification again, URL-encoded as S3 sends keys."""
    sqs = boto3.client("sqs")
    for bucket in (env["TOTESYS_INGEST_BUCKET"], env["TOTESYS_PROCESSED_BUCKET"]):
        url = sqs.get_queue_url(QueueName=queue_name(bucket))["QueueUrl"]
        for run_id in lake.runs_after(bucket, None):
            record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                      "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(lake.manifest_key(run_id))}}}
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Records": [record]}))


def test_notifications_delivered_twice_change_nothing(seeded, warehouse_url, run_sql):
    assert cli(seeded, "tick").returncode == 0
    before = star_digest(run_sql, warehouse_url)
    _redeliver(seeded)
    _redeliver(seeded)
    again = cli(seeded, "tick")
    assert again.returncode == 0, again.stderr
    assert star_digest(run_sql, warehouse_url) == before


@pytest.mark.parametrize("point", ["ingest.before_manifest", "process.before_manifest", "load.before_commit",
                                   "load.after_commit"])
def test_a_run_left_half_done_by_a_crash_is_finished_by_the_next_tick(seeded, warehouse_url, run_sql, point):
    crashed = cli(seeded, "tick", extra={"TOTESYS_CRASH_AT": point})
    assert crashed.returncode == 137
    finished = cli(seeded, "tick")
    assert finished.returncode == 0, finished.stderr
    reconciled = cli(seeded, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout


def test_unreachable_source_fails_with_a_reason_and_no_password(seeded, source, postgres, closed_port):
    url = seeded["TOTESYS_SOURCE_URL"].replace(str(postgres.port), str(closed_port))
    broken = {**seeded, "TOTESYS_SOURCE_URL": url}
    result = cli(broken, "tick")
    assert result.returncode == 1
    assert "source" in result.stderr and postgres.reader_password not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_ticks_on_a_schedule_with_a_line_per_tick(seeded, warehouse_url, run_sql):
    result = cli(seeded, "run", "--interval", "0.1", "--ticks", "2")
    assert result.returncode == 0, result.stderr
    *lines, summary = result.stdout.strip().splitlines()
    assert [line.split("]")[0] for line in lines] == ["[1/2", "[2/2"]
    assert all("ingest" in line and "process" in line and "load" in line for line in lines)
    assert summary == "2 tick(s), 0 failed"
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_load_ledger")[0][0] == 2


def test_reconcile_reports_a_difference_and_exits_1(seeded, warehouse_url, run_sql):
    assert cli(seeded, "tick").returncode == 0
    run_sql(warehouse_url, "UPDATE dim_staff SET first_name = 'Changed' WHERE staff_id = 1")
    run_sql(warehouse_url, "DELETE FROM dim_design WHERE design_id = 2")
    result = cli(seeded, "reconcile")
    assert result.returncode == 1
    assert "dim_staff: 1 different, e.g. [1]" in result.stdout
    assert "dim_design: 1 missing from the warehouse, e.g. [2]" in result.stdout
    assert "DIFFERENCES FOUND" in result.stdout


def test_reconcile_before_any_load_says_why_in_one_line(seeded):
    result = cli(seeded, "reconcile")
    assert result.returncode == 1
    assert result.stderr.startswith("totesys-etl reconcile: nothing to compare")
    assert len(result.stderr.splitlines()) == 1


def test_an_unreachable_s3_api_fails_the_tick_in_one_line(seeded, closed_port):
    result = cli({**seeded, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port}"}, "tick")
    assert result.returncode == 1
    assert result.stderr.startswith("totesys-etl tick: the S3 API failed") and len(result.stderr.splitlines()) == 1
