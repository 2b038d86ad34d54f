"""`totesys-etl status` through the real command: a fresh deployment, then runs, one pending, one held back."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url

pytestmark = pytest.mark.slow


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "totesys_etl", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def test_status_shows_marks_pending_runs_quarantine_lag_and_failures(pipeline_env, source, run_sql, closed_port):
    from totesys_etl.local.source.seed import seed

    before = cli(pipeline_env, "status", "--json")
    assert before.returncode == 0, before.stderr
    empty = json.loads(before.stdout)
    assert empty["load"]["newest_run"] is None and empty["warehouse_rows"] == {} and empty["lag_seconds"] is None

    seed(source.admin_url, orders=50, seed=2)
    assert cli(pipeline_env, "tick").returncode == 0
    run_sql(source.admin_url, "UPDATE sales_order SET agreed_delivery_date = 'soon', last_updated = LOCALTIMESTAMP "
                              "WHERE sales_order_id = 3")
    assert cli(pipeline_env, "tick").returncode == 0
    # An ingest that has not been processed or loaded yet: the next run shows as pending.
    ingest = subprocess.run([sys.executable, "-c", "from totesys_etl.ingest.handler import lambda_handler as h; "
                             "print(h({}, None)['run_id'])"], env={**os.environ, **pipeline_env},
                            capture_output=True, text=True, timeout=300)
    pending = ingest.stdout.strip()
    assert lake.RUN_ID.fullmatch(pending), ingest.stderr

    found = json.loads(cli(pipeline_env, "status", "--json").stdout)
    ledger = run_sql(pipeline_env["TOTESYS_WAREHOUSE_URL"], "SELECT max(run_id) FROM etl_load_ledger")[0][0]
    assert found["ingest"]["newest_run"] == pending
    assert found["process"]["pending"] == [pending] and found["load"]["pending"] == [pending]
    assert found["load"]["newest_run"] == ledger and found["lag_seconds"] > 0
    assert found["quarantined"] == {"quarantined_rows": {"entries": 1, "rows": 1}}
    assert found["warehouse_rows"]["fact_sales_order"] == run_sql(
        pipeline_env["TOTESYS_WAREHOUSE_URL"], "SELECT count(*) FROM fact_sales_order")[0][0]
    table = cli(pipeline_env, "status")
    assert table.returncode == 0 and pending in table.stdout and "quarantined_rows 1 row(s) in 1 file" in table.stdout
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket=pipeline_env["TOTESYS_PROCESSED_BUCKET"], Prefix="_runs/")["KeyCount"] >= 2
    assert found["ingest"]["last_failure"] is None

    # A tick whose source is unreachable: status names the failure and its reason, no credential.
    broken = {**pipeline_env, "TOTESYS_SOURCE_URL": pipeline_env["TOTESYS_SOURCE_URL"].replace(
        f":{source.reader_url.rsplit(':', 1)[1].split('/')[0]}/", f":{closed_port}/")}
    assert cli(broken, "tick").returncode == 1
    failed = json.loads(cli(pipeline_env, "status", "--json").stdout)["ingest"]["last_failure"]
    assert failed["error_kind"] == "source_unavailable" and "unavailable" in failed["reason"]
    shown = cli(pipeline_env, "status").stdout
    assert "last failure" in shown and "source_unavailable" in shown
    assert parse_url(source.reader_url)["password"] not in shown


def test_with_the_warehouse_down_status_shows_the_lake_names_the_warehouse_and_exits_0(
        pipeline_env, source, closed_port):
    """Issue 35: status is what one reads when something is down. Also: every table's rows, the FX
    source's failure, and why a low-water mark is `-`."""
    from totesys_etl.local.source.seed import seed

    seed(source.admin_url, orders=30, seed=4)
    fx_down = {**pipeline_env, "TOTESYS_FX_API_URL": f"http://127.0.0.1:{closed_port}"}
    assert cli(fx_down, "tick").returncode == 0  # FX failing never fails the run
    up = cli(pipeline_env, "status")
    assert up.returncode == 0, up.stderr
    rows = {line.split()[0]: line.split()[1] for line in up.stdout.splitlines() if line.startswith("  ")}
    assert {"fact_sales_order", "fact_delivery", "fact_exchange_rate"} <= set(rows)
    fx_line = next(line for line in up.stdout.splitlines() if line.startswith("FX rates"))
    assert "last failure" in fx_line and "fx_unavailable" in fx_line
    # Runs younger than TOTESYS_SETTLE_SECONDS (default 1200 s) keep the marks unset: the `-` says why.
    assert "-*: no low-water mark yet: every run is younger than TOTESYS_SETTLE_SECONDS (1,200 s)" in up.stdout
    assert [line.split()[2] for line in up.stdout.splitlines() if line.startswith(("process", "load"))] == ["-*"] * 2

    down = {**pipeline_env, "TOTESYS_WAREHOUSE_URL": f"postgresql://u:s3cret-pw@127.0.0.1:{closed_port}/dw"}
    shown = cli(down, "status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("warehouse unreachable:") and "s3cret-pw" not in shown.stdout
    ingest_line = next(line for line in shown.stdout.splitlines() if line.startswith("ingest"))
    assert lake.RUN_ID.search(ingest_line)  # the lake's side is there
    as_json = json.loads(cli(down, "status", "--json").stdout)
    assert set(as_json["unreachable"]) == {"warehouse"} and as_json["ingest"]["newest_run"]

    # The S3 API down instead: the warehouse's side is shown and the S3 API named.
    no_lake = cli({**pipeline_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port}"}, "status")
    assert no_lake.returncode == 0, no_lake.stderr
    assert no_lake.stdout.startswith("S3 API unreachable:") and "fact_sales_order" in no_lake.stdout
