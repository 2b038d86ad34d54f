"""`reconcile` against a real source and a warehouse the loader built: clean after the commit-order
scenario, and each kind of difference it reports shown to fire (and to make the CLI exit 1)."""
from __future__ import annotations

import logging
from datetime import date

import pg8000.native
import pytest

from totesys_etl import cli
from totesys_etl.adapters.postgres import identifier, parse_url, transaction
from totesys_etl.config import Settings
from totesys_etl.load.run import load
from totesys_etl.reconcile import reconcile
from totesys_etl.local.source.source_db import create_source_tables, finish_source_tables
from totesys_etl.schema import SOURCE_TABLES
from totesys_etl.schema.ddl import column_list

TODAY = date(2024, 11, 14)


def _write_source(url: str, state) -> None:
    """The source's tables holding exactly `state`'s current rows."""
    conn = pg8000.native.Connection(**parse_url(url))
    try:
        with transaction(conn):
            create_source_tables(conn)
            for table in SOURCE_TABLES:
                names = table.column_names
                for row in state.rows[table.name].values():
                    conn.run(f"INSERT INTO {identifier(table.name)} ({column_list(names)}) "
                             f"VALUES ({', '.join(':' + n for n in names)})", **{n: row.get(n) for n in names})
            finish_source_tables(conn)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def _log_level_restored():
    """`cli.main` sets the package's log level for the command (CRITICAL); later tests need theirs."""
    logger = logging.getLogger("totesys_etl")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def built(source, settings, processed_lake, totesys, kit, monkeypatch):
    """The commit-order scenario loaded (runs 1, 3, 2: the late one last) and the source as it ends."""
    kit.commit_order_runs(totesys, processed_lake)
    _write_source(source.admin_url, totesys)
    for n in (1, 3, 2):
        load(settings, [kit.run_id(n)], today=TODAY)
    env = {"TOTESYS_SOURCE_URL": source.reader_url, "TOTESYS_WAREHOUSE_URL": settings.warehouse.url,
           "TOTESYS_INGEST_BUCKET": settings.ingest_bucket, "TOTESYS_PROCESSED_BUCKET": settings.processed_bucket}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env(env)


def _checks(report) -> dict:
    return {c.table: c for c in report.checks}


def test_reconcile_is_clean_after_commit_order_is_not_stamp_order(built, capsys):
    report = reconcile(built, history=False)
    assert report.ok, report.table()
    assert _checks(report)["fact_sales_order"].warehouse_rows == 4        # order 1 in 3 versions, order 2 in 1
    assert "warehouse equals source" in report.table()


def _fails_with(capsys, text: str) -> None:
    assert cli.main(["reconcile"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENCES FOUND" in out and text in out, out


def test_a_planted_dimension_row_is_reported_as_extra(built, run_sql, capsys):
    run_sql(built.warehouse.url, "INSERT INTO dim_design (design_id, design_name, file_location, file_name) "
                                 "VALUES (99, 'planted', '/', 'p.json')")
    check = _checks(reconcile(built, history=False))["dim_design"]
    assert check.extra == [99] and not check.missing and not check.different and not check.ok
    _fails_with(capsys, "dim_design: 1 not in the source, e.g. [99]")


def test_a_changed_fact_value_is_reported_as_different(built, run_sql, capsys):
    run_sql(built.warehouse.url, "UPDATE fact_payment SET paid = NOT paid WHERE payment_id = 2")
    check = _checks(reconcile(built, history=False))["fact_payment"]
    assert check.different == [2] and check.missing_versions == [2] and not check.extra and not check.missing
    _fails_with(capsys, "fact_payment: 1 different, e.g. [2]")


def test_a_fact_key_that_resolves_to_no_dimension_row_is_reported(built, run_sql, capsys):
    """An old version (not the current one, so nothing else differs) points at a design that does not exist."""
    run_sql(built.warehouse.url,
            "INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, last_updated_date, "
            "last_updated_time, sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, "
            "agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id, etl_run_id) "
            "SELECT sales_order_id, created_date, created_time, last_updated_date - 1, last_updated_time, "
            "sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, 999, agreed_payment_date, "
            "agreed_delivery_date, agreed_delivery_location_id, '00000000T000000000000Z' "
            "FROM fact_sales_order WHERE sales_order_id = 2")
    check = _checks(reconcile(built, history=False))["fact_sales_order"]
    assert check.unresolved["design_id"] == 1 and sum(check.unresolved.values()) == 1
    assert not check.different and not check.missing and not check.extra and not check.ok
    _fails_with(capsys, "fact_sales_order.design_id: 1 rows do not resolve")


def test_a_lost_current_version_and_a_wrong_current_version_are_told_apart(built, run_sql, kit):
    """Sales order 1 has three versions (runs 1, 2, 3); the source holds run 3's. Losing it is a
    missing version; keeping it but letting an older run's version look current is only different."""
    url = built.warehouse.url
    run_sql(url, "UPDATE fact_sales_order SET etl_run_id = '00000000T000000000000Z' "
                 "WHERE sales_order_id = 1 AND etl_run_id = :r", r=kit.run_id(3))
    check = _checks(reconcile(built, history=False))["fact_sales_order"]
    assert check.different == [1] and check.missing_versions == []
    run_sql(url, "DELETE FROM fact_sales_order WHERE sales_order_id = 1 AND units_sold = 111")
    check = _checks(reconcile(built, history=False))["fact_sales_order"]
    assert check.different == [1] and check.missing_versions == [1]


def test_a_version_stored_twice_is_reported(built, run_sql):
    unique = run_sql(built.warehouse.url, "SELECT conname FROM pg_constraint "
                                          "WHERE conrelid = 'fact_payment'::regclass AND contype = 'u'")[0][0]
    run_sql(built.warehouse.url, f'ALTER TABLE fact_payment DROP CONSTRAINT "{unique}"')
    run_sql(built.warehouse.url,
            "INSERT INTO fact_payment (payment_id, created_date, created_time, last_updated_date, last_updated_time, "
            "transaction_id, counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date, "
            "etl_run_id) SELECT payment_id, created_date, created_time, last_updated_date, last_updated_time, "
            "transaction_id, counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date, "
            "'00000000T000000000000Z' FROM fact_payment WHERE payment_id = 2")
    check = _checks(reconcile(built, history=False))["fact_payment"]
    assert check.duplicate_versions == 1 and not check.ok


def test_a_source_row_that_cannot_be_derived_is_reported_as_held_back_not_a_crash(built, source, run_sql, capsys):
    """Issue 34 item 11: 'TBC' in a varchar date column. The processor holds the row back; reconcile
    used to fail on `'TBC'::date`. It reports that row alone, with PostgreSQL's reason, and the rest."""
    run_sql(source.admin_url, "UPDATE sales_order SET agreed_delivery_date = 'TBC' WHERE sales_order_id = 2")
    run_sql(source.admin_url, "UPDATE purchase_order SET agreed_payment_date = '2024-02-30' "
                              "WHERE purchase_order_id = 1")
    checks = _checks(reconcile(built, history=False))
    orders = checks["fact_sales_order"]
    assert list(orders.held_back) == [2] and "agreed_delivery_date" in orders.held_back[2]
    assert "TBC" in orders.held_back[2]
    assert not orders.missing and not orders.extra and not orders.different and not orders.ok
    assert orders.source_rows == 2   # still counted: one row derived, one held back
    assert list(checks["fact_purchase_order"].held_back) == [1]
    assert all(c.ok for name, c in checks.items() if name not in ("fact_sales_order", "fact_purchase_order"))
    _fails_with(capsys, "fact_sales_order: 1 source rows that cannot be loaded as they are")


def test_a_source_whose_column_types_changed_but_whose_values_fit_reconciles_clean(built, source, run_sql):
    """Contract §2 "Schema changes": a type change whose values still fit goes on, so reconcile, which
    reads the source as declared, is clean; a value that no longer reads as declared is held back."""
    for statement in ("ALTER TABLE sales_order ALTER COLUMN unit_price TYPE varchar",
                      "ALTER TABLE sales_order ALTER COLUMN units_sold TYPE bigint",
                      "ALTER TABLE sales_order ALTER COLUMN agreed_payment_date TYPE date "
                      "USING agreed_payment_date::date",
                      "ALTER TABLE payment ALTER COLUMN last_updated TYPE timestamptz",
                      "ALTER TABLE payment ALTER COLUMN paid TYPE varchar USING CASE WHEN paid THEN 't' ELSE 'f' END",
                      "ALTER TABLE currency ALTER COLUMN currency_code TYPE varchar(10)"):
        run_sql(source.admin_url, statement)
    report = reconcile(built, history=False)
    assert report.ok, report.table()
    run_sql(source.admin_url, "UPDATE sales_order SET unit_price = 'n/a' WHERE sales_order_id = 2")
    orders = _checks(reconcile(built, history=False))["fact_sales_order"]
    assert list(orders.held_back) == [2] and "unit_price" in orders.held_back[2]
    assert not orders.different and not orders.extra


def test_a_dropped_source_column_stops_only_the_tables_that_need_it(built, source, run_sql, capsys):
    """Contract §2 "Schema changes" (issue 34 item 7): with `department.location` dropped, reconcile
    used to fail whole ("column does not exist"). It names the tables that need the column (the
    department's own dimension source and `dim_staff`, which joins it) and compares every other."""
    run_sql(source.admin_url, "ALTER TABLE department DROP COLUMN location")
    checks = _checks(reconcile(built, history=False))
    assert "department lacks location" in checks["dim_staff"].stopped
    assert not checks["dim_staff"].ok
    assert all(c.ok and not c.stopped for name, c in checks.items() if name != "dim_staff"), \
        {n: c.stopped for n, c in checks.items()}
    _fails_with(capsys, "dim_staff: not compared: source table department lacks location")
    run_sql(source.admin_url, "ALTER TABLE department ADD COLUMN location varchar")  # back, empty
    assert _checks(reconcile(built, history=False))["dim_staff"].stopped is None
