"""`simulate --deliveries N` then `tick` and `reconcile` (issue 29): courier files from the landing
bucket's `ObjectCreated` notifications and the sweep to `fact_delivery`, every valid event once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime

import boto3
import pytest

from totesys_etl import lake, quarantine
from totesys_etl import manifest as manifests
from totesys_etl.errors import ConfigurationError
from totesys_etl.local.source.deliveries import simulate_deliveries
from totesys_etl.local.source.seed import seed

pytestmark = pytest.mark.slow


def cli(*args):
    env = {k: v for k, v in os.environ.items()}
    return subprocess.run([sys.executable, "-m", "totesys_etl", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def expected(valid: dict) -> Counter:
    rows = Counter()
    for e in valid.values():
        at = datetime.fromisoformat(e["at"][:-1])
        rows[(e["event_id"], e["sales_order_id"], e["status"], at.date(), at.time(), e["city"], e["courier"])] += 1
    return rows


def stored(run_sql, url: str) -> Counter:
    return Counter(tuple(r) for r in run_sql(url, "SELECT event_id, sales_order_id, status, event_date, event_time, "
                                                  "city, courier FROM fact_delivery"))


@pytest.fixture
def seeded(pipeline_env, landing_bucket, source):
    seed(source.admin_url, orders=200, seed=3)
    return source


def test_simulated_deliveries_reach_the_warehouse_once_and_reconcile(seeded, pipeline_env, landing_bucket, run_sql):
    url = pipeline_env["TOTESYS_WAREHOUSE_URL"]
    first = cli("tick")  # the totesys tables first, so every event's order resolves
    assert first.returncode == 0, first.stderr[-2000:]
    dropped = simulate_deliveries(seeded.admin_url, landing_bucket, 450, seed=7)
    assert dropped.summary() == {"files": 7, "events": 450, "duplicates": 1, "malformed events": 3,
                                 "unreadable files": 1}
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=landing_bucket)["Contents"]]
    assert sorted(keys) == sorted(dropped.files)
    assert any(k.endswith(".gz") for k in keys) and any(k.endswith(".jsonl") for k in keys)
    second = cli("tick")
    assert second.returncode == 0, second.stderr[-2000:]
    assert stored(run_sql, url) == expected(dropped.valid)
    late = run_sql(url, "SELECT sum(late), sum(on_time), sum(without_order) FROM analytics.delivery_on_time")[0]
    assert late[0] > 0 and late[1] > 0 and late[2] == 0
    held = quarantine.listed(pipeline_env["TOTESYS_PROCESSED_BUCKET"])
    # The bad events of the first file, and of its copy under another name; the corrupt file whole.
    assert sorted((h.kind, h.rows) for h in held) == [("quarantined_file", None), ("quarantined_rows", 3),
                                                      ("quarantined_rows", 3)]
    checked = cli("reconcile")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "fact_delivery" in checked.stdout
    # Nothing new: a tick changes no row; a file dropped again under another name adds nothing.
    before = run_sql(url, "SELECT delivery_record_id, etl_run_id, xmin::text FROM fact_delivery ORDER BY 1")
    s3 = boto3.client("s3")
    s3.copy_object(Bucket=landing_bucket, Key="again/same.jsonl.gz",
                   CopySource={"Bucket": landing_bucket, "Key": dropped.files[1]})
    assert cli("tick").returncode == 0
    assert run_sql(url, "SELECT delivery_record_id, etl_run_id, xmin::text FROM fact_delivery ORDER BY 1") == before
    assert cli("reconcile").returncode == 0


def test_reconcile_fails_while_a_landed_file_is_not_taken(seeded, pipeline_env, landing_bucket):
    assert cli("tick").returncode == 0
    simulate_deliveries(seeded.admin_url, landing_bucket, 30, seed=1)
    checked = cli("reconcile")
    assert checked.returncode == 1 and "file not taken yet" in checked.stdout
    shown = json.loads(cli("status", "--json").stdout)
    assert (shown["landing"]["pending"], shown["landing"]["taken"]) == (7, 0)  # since the sweep's mark, a day back
    assert cli("tick").returncode == 0
    assert json.loads(cli("status", "--json").stdout)["landing"]["pending"] == 0
    assert "landing: 0 courier file(s) waiting, 7 taken" in cli("status").stdout
    assert cli("reconcile").returncode == 0
    # One totesys run per tick: the landing queue's s3:TestEvent is not a second scheduled ingest.
    bucket = pipeline_env["TOTESYS_INGEST_BUCKET"]
    kinds = Counter(manifests.read(bucket, r).get("source", "totesys") for r in lake.runs_after(bucket, None))
    assert kinds == {"totesys": 2, "courier": 7}


def test_the_command_line_drops_files_and_needs_seeded_orders(pipeline_env, landing_bucket, source):
    with pytest.raises(ConfigurationError, match="seeded sales orders"):
        seed(source.admin_url, orders=0, seed=1)
        simulate_deliveries(source.admin_url, landing_bucket, 10)
    seed(source.admin_url, orders=20, seed=1)
    done = cli("simulate", "--deliveries", "40", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert "events 40" in done.stdout and "unreadable files 1" in done.stdout
    assert "simulated:" not in done.stdout  # --deliveries alone changes no source row
