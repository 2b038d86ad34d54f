"""Big values end to end (issue 34 item 8, contract §2 "Big values"): a 64 MiB value goes from the source
through the ingested CSV, the processor, Parquet and the loader's binary COPY into the warehouse, byte
for byte; a value one byte larger holds back its own row, the rest of its file loads, and `reconcile`
(which reads every shipped CSV again) reports it rather than failing on it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from totesys_etl.local.source.seed import seed
from totesys_etl.process.read import MAX_VALUE_BYTES

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024 * 1024   # contract §2: "a value up to 64 MB travels"


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "totesys_etl", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=900)


def tick(env):
    done = cli(env, "tick")
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_64_mib_value_reaches_the_warehouse_and_a_larger_one_holds_back_only_its_row(
        pipeline_env, source, warehouse_url, run_sql):
    assert MAX_VALUE_BYTES == LIMIT
    seed(source.admin_url, orders=30, seed=11)
    tick(pipeline_env)
    stamp = "last_updated = LOCALTIMESTAMP"
    run_sql(source.admin_url, f"UPDATE purchase_order SET item_code = repeat('v', {LIMIT}), {stamp} "
                              "WHERE purchase_order_id = 1")
    run_sql(source.admin_url, f"UPDATE address SET address_line_1 = repeat('w', {LIMIT + 1}), {stamp} "
                              "WHERE address_id = 2")
    run_sql(source.admin_url, f"UPDATE address SET city = 'Moved', {stamp} WHERE address_id = 3")
    old = run_sql(warehouse_url, "SELECT address_line_1 FROM dim_location WHERE location_id = 2")
    tick(pipeline_env)

    current = ("SELECT length(item_code), md5(item_code) FROM fact_purchase_order WHERE purchase_order_id = 1 "
               "ORDER BY last_updated_date DESC, last_updated_time DESC LIMIT 1")
    expected = run_sql(source.admin_url, f"SELECT md5(repeat('v', {LIMIT}))")[0][0]
    assert run_sql(warehouse_url, current) == [[LIMIT, expected]]
    assert run_sql(warehouse_url, "SELECT city FROM dim_location WHERE location_id = 3") == [["Moved"]]
    assert run_sql(warehouse_url, "SELECT address_line_1 FROM dim_location WHERE location_id = 2") == old
    held = cli(pipeline_env, "quarantine")
    assert held.returncode == 0 and f"address_line_1 holds {LIMIT + 1:,} bytes" in held.stdout, held.stdout

    report = cli(pipeline_env, "reconcile")
    assert report.returncode == 1 and "DIFFERENCES FOUND" in report.stdout, report.stdout[-3000:] + report.stderr
    different = [line for line in report.stdout.splitlines() if "DIFFERENT" in line]
    assert {line.split()[0] for line in different} <= {"dim_location", "dim_counterparty"}, report.stdout

    run_sql(source.admin_url, f"UPDATE address SET address_line_1 = 'Fixed', {stamp} WHERE address_id = 2")
    tick(pipeline_env)
    report = cli(pipeline_env, "reconcile")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-2000:]
