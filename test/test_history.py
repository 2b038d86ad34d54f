"""Fact history against the lake's runs: a lost old version, a version stored twice and one no run
shipped are each reported (the current-version check alone would pass all three)."""
from __future__ import annotations

import os
import subprocess
import sys

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.history import check_history

pytestmark = pytest.mark.slow


def tick(env) -> None:
    done = subprocess.run([sys.executable, "-m", "totesys_etl", "tick"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def loaded(pipeline_env, source, warehouse_url, run_sql):
    """A warehouse with history: a first tick, one order updated twice, a tick after each."""
    from totesys_etl.local.source.seed import seed

    seed(source.admin_url, orders=60, seed=3)
    tick(pipeline_env)
    for units in (7, 8):
        run_sql(source.admin_url, "UPDATE sales_order SET units_sold = :u, last_updated = LOCALTIMESTAMP "
                                  "WHERE sales_order_id = 5", u=units)
        tick(pipeline_env)
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    yield pipeline_env, conn
    conn.close()


def _history(env, conn) -> dict:
    return {h.fact: h for h in check_history(conn, env["TOTESYS_INGEST_BUCKET"], env["TOTESYS_PROCESSED_BUCKET"])}


def test_history_is_clean_after_runs_and_reports_each_kind_of_loss(loaded):
    env, conn = loaded
    clean = _history(env, conn)
    assert all(h.ok for h in clean.values()) and clean["fact_sales_order"].shipped >= 62
    oldest = conn.run("SELECT sales_record_id, last_updated_date, last_updated_time FROM fact_sales_order "
                      "WHERE sales_order_id = 5 ORDER BY last_updated_date, last_updated_time LIMIT 1")[0]
    conn.run("DELETE FROM fact_sales_order WHERE sales_record_id = :id", id=oldest[0])  # an old version lost
    conn.run("INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, last_updated_date, "
             "last_updated_time, sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, "
             "agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id, etl_run_id) "
             "SELECT sales_order_id, created_date, created_time, DATE '1999-01-01', last_updated_time, sales_staff_id,"
             " counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date, "
             "agreed_delivery_date, agreed_delivery_location_id, etl_run_id FROM fact_sales_order "
             "WHERE sales_order_id = 6 LIMIT 1")  # a version no run shipped
    unique = conn.run("SELECT conname FROM pg_constraint WHERE conrelid = 'fact_sales_order'::regclass "
                      "AND contype = 'u'")[0][0]
    conn.run(f'ALTER TABLE fact_sales_order DROP CONSTRAINT "{unique}"')  # nosec B608 - a name PostgreSQL gave
    conn.run("INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, last_updated_date, "
             "last_updated_time, sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, "
             "agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id, etl_run_id) "
             "SELECT sales_order_id, created_date, created_time, last_updated_date, last_updated_time, sales_staff_id,"
             " counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date, "
             "agreed_delivery_date, agreed_delivery_location_id, etl_run_id FROM fact_sales_order "
             "WHERE sales_order_id = 7 LIMIT 1")  # a version stored twice
    damaged = _history(env, conn)["fact_sales_order"]
    assert [v[0] for v in damaged.lost] == [5] and [v[0] for v in damaged.unshipped] == [6]
    assert [v[0] for v in damaged.twice] == [7] and not damaged.ok
    assert _history(env, conn)["fact_payment"].ok


def test_a_version_committed_as_x_then_y_then_x_under_one_stamp_is_history_not_a_reship(loaded, source, run_sql):
    """Three commits under one stamp, each read by its own run: x, y, x is what the source showed
    (the later commit's values win, contract §3), so no run shipped a version it should have dropped."""
    env, conn = loaded
    for units in (20, 21, 20):
        run_sql(source.admin_url, "UPDATE sales_order SET units_sold = :u, "
                                  "last_updated = TIMESTAMP '2031-01-02 03:04:05' WHERE sales_order_id = 9", u=units)
        tick(env)
    history = _history(env, conn)["fact_sales_order"]
    assert history.reshipped == [] and history.ok
    assert conn.run("SELECT units_sold FROM fact_sales_order WHERE sales_order_id = 9 "
                    "AND last_updated_date = DATE '2031-01-02'") == [[20]]
    done = subprocess.run([sys.executable, "-m", "totesys_etl", "reconcile"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
