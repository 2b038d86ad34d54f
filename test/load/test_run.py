"""Loading runs against a real PostgreSQL and moto: contents, replays, order, concurrency, crashes."""
from __future__ import annotations

import io
import json
import threading
import time
from datetime import date, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from totesys_etl import lake, quarantine
from totesys_etl import manifest as manifests
from totesys_etl.errors import LoadFailed
from totesys_etl.load import bulk, files
from totesys_etl.load import run as load_run_module
from totesys_etl.load.ledger import load_mark, loaded_runs
from totesys_etl.load.migrations import migrate
from totesys_etl.load.run import load, warehouse_connection
from totesys_etl.process.run import process_run
from totesys_etl.schema import DIMENSIONS, FACT_EXCHANGE_RATE, FACTS, STATE_TABLES, fact_references, state_table
from totesys_etl.schema.rereads import reread_table, stored_key
from totesys_etl.schema.warehouse import newest_first

TODAY = date(2024, 11, 14)


def _all_versions(state) -> dict[str, list[dict]]:
    return {table: list(rows.values()) for table, rows in state.rows.items()}


def _data(url, kit) -> dict:
    """Star tables without surrogate keys or xmin (what may differ between crashed and clean runs)."""
    return kit.star_snapshot(url, with_system=False)


def test_a_loaded_run_equals_its_parquet(settings, processed_lake, totesys, kit, warehouse_url, run_sql):
    versions = _all_versions(totesys)
    processed_lake.write_run(kit.run_id(1), versions)
    result = load(settings, [kit.run_id(1)], today=TODAY)

    assert result["status"] == "ok" and [r["run_id"] for r in result["runs"]] == [kit.run_id(1)]
    rows = result["runs"][0]["rows"]
    assert rows["fact_sales_order"] == 2 and rows["fact_payment"] == 2 and rows["dim_currency"] == 5
    for fact in FACTS:
        want = sorted(tuple(kit.fact_row(fact, r).values()) for r in versions[fact.source])
        assert kit.table_rows(warehouse_url, fact) == want, fact.name
    for state in STATE_TABLES:
        want = sorted(tuple(r.values()) for r in versions[state.source])
        assert kit.table_rows(warehouse_url, state) == want, state.name
    for dimension in DIMENSIONS:
        assert kit.table_rows(warehouse_url, dimension) == kit.expected_dimension(dimension, totesys), dimension.name
    currency = dict(run_sql(warehouse_url, "SELECT currency_code, currency_name FROM dim_currency"))
    assert currency == {"GBP": "Pound Sterling", "USD": "US Dollar", "EUR": "Euro", "CHF": "Swiss Franc",
                        "XQQ": None}
    # NULL stays NULL and '' stays '', and awkward text arrives byte for byte.
    assert run_sql(warehouse_url, "SELECT address_line_2, district, address_line_1 FROM dim_location "
                                  "WHERE location_id = 2") == [["", "", kit.TRICKY]]
    assert run_sql(warehouse_url, "SELECT address_line_2, district FROM dim_location WHERE location_id = 1") \
        == [[None, None]]
    assert run_sql(warehouse_url, "SELECT payment_amount FROM fact_payment ORDER BY payment_id") \
        == [[Decimal("0.00000001")], [Decimal("-12345678901.12345678")]]
    assert loaded_runs(warehouse_connection(settings)) == {kit.run_id(1)}


def test_files_into_empty_tables_go_straight_in_and_a_file_it_rejects_takes_the_merge(
        settings, processed_lake, totesys, kit, warehouse_url, run_sql, log_lines):
    """A first load copies each file straight into its empty table; a file that repeats a version,
    or holds two versions of one id, is rolled back and merged instead: stored once, newest wins."""
    versions = _all_versions(totesys)
    old_address = dict(totesys.rows["address"][1])
    new_address = totesys.change("address", 1, city="Newtown")
    versions["address"] = [old_address, *[r for r in versions["address"] if r is not new_address], new_address]
    versions["payment"] = [*versions["payment"], versions["payment"][0]]       # one version twice
    processed_lake.write_run(kit.run_id(1), versions)

    result = load(settings, [kit.run_id(1)], today=TODAY)

    rows = result["runs"][0]["rows"]
    assert rows["fact_payment"] == 2 and rows["fact_sales_order"] == 2
    assert rows["etl_src_address"] == len(totesys.rows["address"])
    loaded = next(line for line in log_lines if line["message"] == "run loaded")
    assert "fact_sales_order" in loaded["direct"] and "etl_src_design" in loaded["direct"]
    assert "fact_payment" not in loaded["direct"] and "etl_src_address" not in loaded["direct"]
    assert run_sql(warehouse_url, "SELECT count(*), count(DISTINCT payment_id) FROM fact_payment") == [[2, 2]]
    assert run_sql(warehouse_url, "SELECT city FROM dim_location WHERE location_id = 1") == [["Newtown"]]
    assert run_sql(warehouse_url, "SELECT DISTINCT etl_run_id FROM fact_sales_order") == [[kit.run_id(1)]]
    for dimension in DIMENSIONS:
        assert kit.table_rows(warehouse_url, dimension) == kit.expected_dimension(dimension, totesys), dimension.name
    for fact in FACTS:
        want = sorted({tuple(kit.fact_row(fact, r).values()) for r in versions[fact.source]})
        assert kit.table_rows(warehouse_url, fact) == want, fact.name

    # A later run finds the tables filled: it merges as before, and a replay changes nothing.
    totesys.change("sales_order", 1, units_sold=999)
    processed_lake.write_run(kit.run_id(2), {"sales_order": [totesys.rows["sales_order"][1]]})
    second = load(settings, [kit.run_id(2)], today=TODAY)
    assert second["runs"][0]["rows"] == {"fact_sales_order": 1}
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[3]]


def test_indexes_dropped_for_a_big_first_copy_come_back_exactly_and_still_catch_a_repeated_version(
        settings, processed_lake, totesys, kit, warehouse_url, run_sql, log_lines, monkeypatch):
    monkeypatch.setattr(bulk, "REBUILD_FROM_ROWS", 1)      # every file counts as big
    catalog = ("SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), k.conname, "
               "pg_get_constraintdef(k.oid) FROM pg_index i LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid "
               "WHERE i.indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace) ORDER BY 1")
    conn = warehouse_connection(settings)
    try:
        migrate(conn)
    finally:
        conn.close()
    before = run_sql(warehouse_url, catalog)
    versions = _all_versions(totesys)
    versions["payment"] = [*versions["payment"], versions["payment"][0]]       # one version twice
    processed_lake.write_run(kit.run_id(1), versions)

    load(settings, [kit.run_id(1)], today=TODAY)

    assert run_sql(warehouse_url, catalog) == before
    assert run_sql(warehouse_url, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' "
                                  "AND column_name = 'etl_run_id' AND column_default IS NOT NULL") == [[0]]
    # surrogate keys from the reserved block, one per row, and the sequence goes on after them
    assert run_sql(warehouse_url, "SELECT min(sales_record_id), max(sales_record_id), count(*) "
                                  "FROM fact_sales_order") == [[1, 2, 2]]
    assert run_sql(warehouse_url, "SELECT nextval(pg_get_serial_sequence('fact_sales_order', 'sales_record_id'))") \
        == [[3]]
    loaded = next(line for line in log_lines if line["message"] == "run loaded")
    assert "fact_sales_order" in loaded["direct"] and "fact_payment" not in loaded["direct"]
    assert run_sql(warehouse_url, "SELECT count(*), count(DISTINCT payment_id) FROM fact_payment") == [[2, 2]]
    for fact in FACTS:
        want = sorted({tuple(kit.fact_row(fact, r).values()) for r in versions[fact.source]})
        assert kit.table_rows(warehouse_url, fact) == want, fact.name


def test_loading_again_changes_no_row(settings, processed_lake, totesys, kit, warehouse_url, run_sql):
    versions = _all_versions(totesys)
    processed_lake.write_run(kit.run_id(1), versions)
    load(settings, [kit.run_id(1)], today=TODAY)
    before = kit.star_snapshot(warehouse_url)
    sequences = run_sql(warehouse_url, "SELECT last_value FROM fact_sales_order_sales_record_id_seq")

    assert load(settings, [kit.run_id(1)], today=TODAY)["runs"] == []     # the same event replayed
    assert load(settings, None, today=TODAY)["runs"] == []                # a sweep
    processed_lake.write_run(kit.run_id(2), versions)                     # the same versions, another run
    assert [r["rows"] for r in load(settings, None, today=TODAY)["runs"]] == [{}]
    assert kit.star_snapshot(warehouse_url) == before
    assert run_sql(warehouse_url, "SELECT last_value FROM fact_sales_order_sales_record_id_seq") == sequences
    assert loaded_runs(warehouse_connection(settings)) == {kit.run_id(1), kit.run_id(2)}


def _changes(state) -> list[dict[str, list[dict]]]:
    """Runs 1..4 of a source where a counterparty moves, its old address changes, a department changes."""
    runs = [_all_versions(state)]
    runs.append({"counterparty": [state.change("counterparty", 1, legal_address_id=3)],
                 "sales_order": [state.change("sales_order", 1, units_sold=101)]})
    runs.append({"address": [state.change("address", 1, city="Bradford", district="West")]})
    runs.append({"department": [state.change("department", 1, department_name="Retail", location=None)],
                 "staff": [state.change("staff", 2, last_name="Smith")],
                 "sales_order": [state.change("sales_order", 1, units_sold=102)]})
    return runs


@pytest.mark.parametrize("order", [[3, 2, 4, 1], [4, 3, 2, 1]])
def test_runs_out_of_order_end_as_in_order(settings, processed_lake, totesys, kit, warehouse_url,
                                           fresh_warehouse, order):
    runs = _changes(totesys)
    for n, versions in enumerate(runs, start=1):
        processed_lake.write_run(kit.run_id(n), versions)
    in_order = fresh_warehouse()
    for n in range(1, 5):
        load(in_order, [kit.run_id(n)], today=TODAY)
    for n in order:
        load(settings, [kit.run_id(n)], today=TODAY)

    for dimension in DIMENSIONS:
        assert kit.table_rows(warehouse_url, dimension) == kit.expected_dimension(dimension, totesys), dimension.name
    assert _data(warehouse_url, kit) == _data(in_order.warehouse.url, kit)
    counterparty = kit.table_rows(warehouse_url, DIMENSIONS[4])
    assert counterparty[0][:3] == (1, "Acme, Ltd", "3 Rue")          # moved, and not to the changed address
    staff = {r[0]: r for r in kit.table_rows(warehouse_url, DIMENSIONS[0])}
    assert staff[1][3:5] == ("Retail", None) and staff[2][2] == "Smith"
    fact = kit.table_rows(warehouse_url, FACTS[0])
    assert [(r[0], r[7]) for r in fact if r[0] == 1] == [(1, 100), (1, 101), (1, 102)]


def test_spec_case_counterparty_moved_then_old_address_changed(settings, processed_lake, totesys, kit,
                                                               warehouse_url):
    """contract §3: run 2 (move) and run 3 (old address changes); run 3 loaded first, then run 2."""
    runs = _changes(totesys)[:3]
    for n, versions in enumerate(runs, start=1):
        processed_lake.write_run(kit.run_id(n), versions)
    load(settings, [kit.run_id(1)], today=TODAY)
    load(settings, [kit.run_id(3)], today=TODAY)
    row = kit.table_rows(warehouse_url, DIMENSIONS[4])[0]
    assert row[2] == "1 High St" and row[5] == "Bradford"             # still at the old, changed address
    load(settings, [kit.run_id(2)], today=TODAY)
    assert kit.table_rows(warehouse_url, DIMENSIONS[4]) == kit.expected_dimension(DIMENSIONS[4], totesys)
    assert kit.table_rows(warehouse_url, DIMENSIONS[4])[0][5] == "Paris"


def test_an_older_version_never_overwrites_a_newer_one(settings, processed_lake, totesys, kit, warehouse_url):
    old = totesys.rows["address"][1]
    new = totesys.change("address", 1, city="York")
    processed_lake.write_run(kit.run_id(2), {"address": [new]})
    processed_lake.write_run(kit.run_id(1), {"address": [old]})
    load(settings, [kit.run_id(2)], today=TODAY)
    before = kit.star_snapshot(warehouse_url)
    load(settings, [kit.run_id(1)], today=TODAY)
    assert kit.star_snapshot(warehouse_url) == before
    assert kit.table_rows(warehouse_url, DIMENSIONS[1])[0][4] == "York"


@pytest.mark.parametrize("order", [[1, 2, 3], [1, 3, 2], [3, 2, 1]])
def test_state_dimensions_and_current_facts_follow_commit_order_not_stamps(
        settings, processed_lake, totesys, kit, warehouse_url, run_sql, order):
    stamps = kit.commit_order_runs(totesys, processed_lake)
    for n in order:
        load(settings, [kit.run_id(n)], today=TODAY)
    assert run_sql(warehouse_url, "SELECT city FROM dim_location WHERE location_id = 1") == [["T1 city"]]
    assert run_sql(warehouse_url, "SELECT counterparty_legal_city FROM dim_counterparty "
                                  "WHERE counterparty_id = 1") == [["T1 city"]]
    assert run_sql(warehouse_url, "SELECT city, last_updated, etl_run_id FROM etl_src_address "
                                  "WHERE address_id = 1") == [["T1 city", stamps["t1"], kit.run_id(3)]]
    for dimension in DIMENSIONS:
        assert kit.table_rows(warehouse_url, dimension) == kit.expected_dimension(dimension, totesys), dimension.name
    # every version read is kept; the one the latest run read is current, whatever its stamp
    order_by = ", ".join(f"{c} DESC" for c in newest_first(FACTS[0]))
    versions = run_sql(warehouse_url, "SELECT units_sold, etl_run_id FROM fact_sales_order WHERE sales_order_id = 1 "
                                      f"ORDER BY {order_by}")
    assert versions == [[111, kit.run_id(3)], [222, kit.run_id(2)], [100, kit.run_id(1)]]
    # two commits with one stamp are one version, and the later commit's values win
    assert run_sql(warehouse_url, "SELECT payment_amount, etl_run_id FROM fact_payment WHERE payment_id = 1 "
                                  "ORDER BY last_updated_date, last_updated_time") == [
        [Decimal("0.00000001"), kit.run_id(1)], [Decimal("1.11"), kit.run_id(3)]]


def _rates_parquet(rate: str) -> bytes:
    """One day's GBP to USD rate as the processor writes `fact_exchange_rate`."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"rate_date": date(2024, 11, 13), "currency_id": 2,
                                          "units_per_gbp": Decimal(rate), "carried": False}],
                                        schema=FACT_EXCHANGE_RATE.arrow_schema), buffer)
    return buffer.getvalue()


def _x_y_x_runs(totesys, processed_lake, kit) -> None:
    """Runs 1 < 2 < 3 that carry values x, y, x for one key of each merge rule. Payment 1 is committed
    three times under one stamp, with amounts x, y, x. Sales order 1: run 1 reads version A, run 2
    reads B (committed later, stamped earlier), run 3 reads A again (a writer set the stamp back). The
    FX API revises a day's USD rate, then revises it back."""
    payment, order = totesys.rows["payment"][1], totesys.rows["sales_order"][1]
    b = {**order, "units_sold": 555, "last_updated": order["last_updated"] - timedelta(seconds=1)}
    processed_lake.write_run(kit.run_id(1), _all_versions(totesys), extra_files={
        FACT_EXCHANGE_RATE.name: _rates_parquet("1.2712")})
    processed_lake.write_run(kit.run_id(2), {"payment": [{**payment, "paid": True}], "sales_order": [b]},
                             extra_files={FACT_EXCHANGE_RATE.name: _rates_parquet("1.2713")})
    processed_lake.write_run(kit.run_id(3), {"payment": [payment], "sales_order": [order]},
                             extra_files={FACT_EXCHANGE_RATE.name: _rates_parquet("1.2712")})


def _current_versions(url: str, run_sql) -> dict[str, list]:
    """Each fact's current version of every id (greatest `etl_run_id`, then stamp), as the views read it."""
    current = {}
    for fact in FACTS:
        source_id = fact.version_key[0]
        order = ", ".join(f"{c} DESC" for c in newest_first(fact))
        current[fact.name] = run_sql(url, f"SELECT DISTINCT ON ({source_id}) {', '.join(fact.version_key)} "
                                          f"FROM {fact.name} ORDER BY {source_id}, {order}")
    return current


def _runs_by_key(url: str, run_sql) -> dict[str, dict[tuple, tuple]]:
    """Fact and rate rows by stored key: (their `etl_run_id`, their re-read ledger entry's run or None)."""
    found = {}
    for table in (*FACTS, FACT_EXCHANGE_RATE):
        key = ", ".join(stored_key(table))
        found[table.name] = {tuple(r[:-2]): tuple(r[-2:]) for r in run_sql(
            url, f"SELECT {key}, f.etl_run_id, x.etl_run_id FROM {table.name} AS f "
                 f"LEFT JOIN {reread_table(table.name).name} AS x USING ({key})")}
    return found


@pytest.mark.parametrize("order", [[1, 3, 2], [3, 1, 2], [2, 3, 1]])
def test_runs_carrying_x_y_x_out_of_order_end_as_in_order(settings, processed_lake, totesys, kit, warehouse_url,
                                                          fresh_warehouse, run_sql, order):
    """Last session's review: runs loaded 1, 3, 2 kept run 2's values (y) where an in-order load
    keeps x, in fact versions and in rates alike; and the version run 3 read again lost its place as
    current to run 2's. Every order must end with the in-order rows and current versions. Each row's
    effective run (its `etl_run_id` or its re-read ledger entry, the later) is the in-order one too;
    its own `etl_run_id` differs only where a ledger entry holds the later run that carried the
    values again (load/rereads.py: moving it would rewrite a row whose values stay)."""
    _x_y_x_runs(totesys, processed_lake, kit)
    in_order = fresh_warehouse()
    for n in (1, 2, 3):
        load(in_order, [kit.run_id(n)], today=TODAY)
    for n in order:
        load(settings, [kit.run_id(n)], today=TODAY)

    assert _data(warehouse_url, kit) == _data(in_order.warehouse.url, kit)
    assert _current_versions(warehouse_url, run_sql) == _current_versions(in_order.warehouse.url, run_sql)
    rates = "SELECT rate_date, currency_id, units_per_gbp, carried FROM fact_exchange_rate"
    assert run_sql(warehouse_url, rates) == run_sql(in_order.warehouse.url, rates) == [
        [date(2024, 11, 13), 2, Decimal("1.2712"), False]]
    assert run_sql(warehouse_url, "SELECT paid FROM fact_payment WHERE payment_id = 1") == [[False]]
    got, want = _runs_by_key(warehouse_url, run_sql), _runs_by_key(in_order.warehouse.url, run_sql)
    assert {t: {k: max(r for r in runs if r) for k, runs in rows.items()} for t, rows in got.items()} == \
        {t: {k: max(r for r in runs if r) for k, runs in rows.items()} for t, rows in want.items()}
    differ = {(t, k) for t, rows in got.items() for k, runs in rows.items() if runs[0] != want[t][k][0]}
    assert all(got[t][k][1] or want[t][k][1] for t, k in differ), differ
    if order == [1, 3, 2]:  # payment 1 and the rate keep run 1, run 3 in the ledger; sales order 1 is promoted
        assert sorted((t, got[t][k], want[t][k]) for t, k in differ) == [
            ("fact_exchange_rate", (kit.run_id(1), kit.run_id(3)), (kit.run_id(3), None)),
            ("fact_payment", (kit.run_id(1), kit.run_id(3)), (kit.run_id(3), None))]


def test_two_loaders_at_once_load_every_row_once(settings, processed_lake, totesys, kit, warehouse_url,
                                                 fresh_warehouse):
    runs = _changes(totesys)
    for n, versions in enumerate(runs, start=1):
        processed_lake.write_run(kit.run_id(n), versions)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def loader():
        try:
            barrier.wait(timeout=30)       # released together, so the two loads really overlap
            results.append(load(settings, None, wait_seconds=60, today=TODAY))
        except Exception as e:  # asserted below
            errors.append(e)

    threads = [threading.Thread(target=loader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r["status"] for r in results] == ["ok", "ok"]
    loaded = sorted(r["run_id"] for result in results for r in result["runs"])
    assert loaded == [kit.run_id(n) for n in range(1, 5)]              # each run loaded by exactly one
    clean = fresh_warehouse()
    load(clean, None, today=TODAY)
    assert _data(warehouse_url, kit) == _data(clean.warehouse.url, kit)
    for fact in FACTS:
        keys = [(r[0], r[3], r[4]) for r in kit.table_rows(warehouse_url, fact)]   # (id, last_updated)
        assert len(keys) == len(set(keys))


def test_an_exception_inside_the_transaction_then_a_rerun_equals_a_clean_load(
        settings, processed_lake, totesys, kit, warehouse_url, fresh_warehouse, monkeypatch, log_lines):
    runs = _changes(totesys)
    for n, versions in enumerate(runs, start=1):
        processed_lake.write_run(kit.run_id(n), versions)
    load(settings, [kit.run_id(1)], today=TODAY)

    def explode(point):
        if point == "load.before_commit":
            raise RuntimeError("simulated crash")

    original = load_run_module.crash_point
    monkeypatch.setattr(load_run_module, "crash_point", explode)
    with pytest.raises(LoadFailed):
        load(settings, None, today=TODAY)
    assert loaded_runs(warehouse_connection(settings)) == {kit.run_id(1)}
    errors = [line for line in log_lines if line["level"] == "ERROR"]
    assert {line["run_id"] for line in errors if line.get("run_id")} == {kit.run_id(n) for n in (2, 3, 4)}
    assert all(line["error_kind"] == "load_failed" for line in errors)
    monkeypatch.setattr(load_run_module, "crash_point", original)
    load(settings, None, today=TODAY)

    clean = fresh_warehouse()
    load(clean, None, today=TODAY)
    assert _data(warehouse_url, kit) == _data(clean.warehouse.url, kit)


def test_dim_date_is_seeded_once_then_grows_only_for_fact_dates(
        settings, processed_lake, totesys, kit, warehouse_url, run_sql):
    processed_lake.write_run(kit.run_id(1), _all_versions(totesys))
    load(settings, [kit.run_id(1)], today=TODAY)
    first, last = date(2021, 11, 14), date(2027, 11, 14)
    dates = {r[0] for r in run_sql(warehouse_url, "SELECT date_id FROM dim_date")}
    outside = {date(2031, 1, 1), date(2019, 2, 28)}                     # dates the facts need
    assert dates == {first + timedelta(days=n) for n in range((last - first).days + 1)} | outside
    assert run_sql(warehouse_url, "SELECT year, month, day, day_of_week, day_name, month_name, quarter "
                                  "FROM dim_date WHERE date_id = '2031-01-01'") \
        == [[2031, 1, 1, 3, "Wednesday", "January", 1]]

    order = totesys.change("sales_order", 2, agreed_delivery_date="2040-02-29")
    processed_lake.write_run(kit.run_id(2), {"sales_order": [order]})
    load(settings, [kit.run_id(2)], today=date(2035, 1, 1))            # a later load seeds nothing more
    grown = {r[0] for r in run_sql(warehouse_url, "SELECT date_id FROM dim_date")}
    assert grown == dates | {date(2040, 2, 29)}


def test_every_fact_key_and_date_resolves(settings, processed_lake, totesys, kit, warehouse_url, run_sql):
    runs = _changes(totesys)
    for n, versions in enumerate(runs, start=1):
        processed_lake.write_run(kit.run_id(n), versions)
    load(settings, None, today=TODAY)
    for fact in FACTS:
        for column, target in fact_references(fact).items():
            table, key = target.split(".")
            missing = run_sql(warehouse_url, f'SELECT count(*) FROM {fact.name} f WHERE NOT EXISTS '
                                             f'(SELECT 1 FROM {table} d WHERE d."{key}" = f."{column}")')
            assert missing == [[0]], (fact.name, column)


def _parquet(table: pa.Table, **options) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def test_bad_files_are_quarantined_and_the_rest_loads(settings, processed_lake, totesys, kit, warehouse_url,
                                                      log_lines, run_sql, monkeypatch):
    versions = {t: rows for t, rows in _all_versions(totesys).items() if t not in ("payment", "purchase_order")}
    wrong = pa.table({"payment_id": pa.array([1], pa.int32())})
    nulls = pa.Table.from_pylist([{**totesys.rows["design"][1], "design_name": None}],
                                 schema=pa.schema([f.with_nullable(True) for f in
                                                   state_table("design").arrow_schema]))
    many = [{**totesys.rows["purchase_order"][1], "purchase_order_id": i} for i in range(1, 20001)]
    damaged = bytearray(_parquet(pa.Table.from_pylist([kit.fact_row(FACTS[1], r) for r in many],
                                                      schema=FACTS[1].arrow_schema),
                                 row_group_size=5000, compression="snappy", write_page_checksum=True))
    page = pq.ParquetFile(io.BytesIO(bytes(damaged))).metadata.row_group(2).column(0).data_page_offset
    damaged[page + 40:page + 60] = b"\0" * 20                       # readable footer, bad third row group
    monkeypatch.setattr(files, "BATCH_ROWS", 4096)                   # so good batches stream before the bad one
    hostile = f"etl_src_currency/../../x_{kit.run_id(2)}.parquet'; DROP TABLE dim_currency; --"
    processed_lake.s3.put_object(Bucket=processed_lake.processed, Key=hostile, Body=b"never opened")
    manifest = processed_lake.write_run(kit.run_id(1), versions, extra_files={
        "fact_payment": _parquet(wrong), "etl_src_design": _parquet(nulls), "fact_purchase_order": bytes(damaged),
        "etl_src_payment_type": b"not parquet at all"},
        raw_entries={"dim_staff": {"key": "dim_staff/x.parquet"}, "etl_src_currency": {"key": hostile}})

    result = load(settings, [kit.run_id(1)], today=TODAY)
    assert result["runs"][0]["quarantined"] == 5
    quarantined = set(processed_lake.keys("quarantine/"))
    for name in ("fact_payment", "etl_src_design", "fact_purchase_order", "etl_src_payment_type"):
        key = manifest["files"][name]["key"]
        assert {f"quarantine/{kit.run_id(1)}/{key}", f"quarantine/{kit.run_id(1)}/{key}.reason.json"} <= quarantined
        assert key in processed_lake.keys(key)                           # the original stays
    manifest_copy = f"quarantine/{kit.run_id(1)}/processed/_runs/{kit.run_id(1)}.json"  # hostile entries: unopened
    assert {manifest_copy, manifest_copy + ".reason.json"} <= quarantined and len(quarantined) == 10
    reason = processed_lake.s3.get_object(Bucket=processed_lake.processed, Key=manifest_copy + ".reason.json")
    text = reason["Body"].read().decode()
    assert "'dim_staff'" in text and "'etl_src_currency'" in text
    errors = [line for line in log_lines if line["level"] == "ERROR"]
    assert sorted(line["error_kind"] for line in errors) == ["quarantined_file"] * 4 + ["quarantined_manifest"]
    # the rest of the run loaded, and the transaction stayed healthy after the rejected COPYs
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[2]]
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_purchase_order") == [[0]]
    for table in ("dim_design", "dim_currency", "dim_payment_type"):
        assert run_sql(warehouse_url, f"SELECT count(*) FROM {table}") == [[0]]
    assert kit.table_rows(warehouse_url, DIMENSIONS[0]) == kit.expected_dimension(DIMENSIONS[0], totesys)
    assert loaded_runs(warehouse_connection(settings)) == {kit.run_id(1)}


#: Corrupt processed manifests: not JSON; a 50 KB `[[[…` (json raises RecursionError, not a ValueError:
#: the run failed on every attempt, its mark stuck); valid JSON padded past manifest.MAX_BYTES (judged by
#: its size alone: read, it would load as an empty run).
CORRUPT = {"not JSON": lambda run_id: b"{nope", "nested": lambda run_id: b"[" * 50_000,
           "too large": lambda run_id: json.dumps({"run_id": run_id, "stage": "process", "files": {},
                                                   "quarantined": []}).encode().ljust(manifests.MAX_BYTES + 1)}


@pytest.mark.parametrize("corrupt", CORRUPT.values(), ids=CORRUPT)
def test_a_corrupt_manifest_is_quarantined_and_passed(settings, processed_lake, kit, log_lines, corrupt):
    processed_lake.write_ingested(kit.run_id(1))
    processed_lake.s3.put_object(Bucket=processed_lake.processed, Key=f"_runs/{kit.run_id(1)}.json",
                                 Body=corrupt(kit.run_id(1)))
    result = load(settings, None, today=TODAY)
    assert result["runs"][0].pop("seconds") >= 0
    assert result["runs"] == [{"run_id": kit.run_id(1), "rows": {}, "files": 0, "quarantined": 1}]
    copy = f"quarantine/{kit.run_id(1)}/processed/_runs/{kit.run_id(1)}.json"
    assert f"{copy}.reason.json" in processed_lake.keys("quarantine/")
    assert load_mark(warehouse_connection(settings)) == kit.run_id(1)
    assert [line["error_kind"] for line in log_lines if line["level"] == "ERROR"] == ["quarantined_manifest"]


def test_both_manifests_of_a_run_tampered_are_each_kept_and_listed(settings, processed_lake, kit, log_lines):
    """The processor quarantines a run's corrupt ingested manifest, the loader the same run's corrupt
    processed one: both copies are kept (quarantine writes are create-only, so one shared key kept the
    processor's alone and lost the loader's evidence) and `totesys-etl quarantine` lists both."""
    run_id = kit.run_id(1)
    bodies = {processed_lake.ingested: b'{"run_id": "' + run_id.encode(), processed_lake.processed: b"{nope"}
    processed_lake.s3.put_object(Bucket=processed_lake.ingested, Key=lake.manifest_key(run_id),
                                 Body=bodies[processed_lake.ingested])
    assert process_run(settings, run_id).quarantined == 1
    processed_lake.s3.put_object(Bucket=processed_lake.processed, Key=lake.manifest_key(run_id),   # tampered
                                 Body=bodies[processed_lake.processed])
    assert load(settings, [run_id], today=TODAY)["runs"][0]["quarantined"] == 1

    copies = [k for k in processed_lake.keys(f"quarantine/{run_id}/") if not k.endswith(".reason.json")]
    assert sorted(processed_lake.s3.get_object(Bucket=processed_lake.processed, Key=k)["Body"].read()
                  for k in copies) == sorted(bodies.values())
    held = quarantine.listed(processed_lake.processed, run_id)
    assert [(h.table, h.key, h.kind) for h in held] == [("-", lake.manifest_key(run_id), "quarantined_manifest")] * 2
    assert {h.reason.split(":")[0] for h in held} == {"in the ingested bucket", "in the processed bucket"}
    assert [line["error_kind"] for line in log_lines if line["level"] == "ERROR"] == ["quarantined_manifest"] * 2


def test_the_sweep_mark_waits_for_a_run_ingested_but_not_processed(settings, processed_lake, totesys, kit):
    versions = _all_versions(totesys)
    processed_lake.write_run(kit.run_id(1), versions)
    processed_lake.write_ingested(kit.run_id(2))                        # not processed yet
    processed_lake.write_run(kit.run_id(3), {"address": [totesys.change("address", 3, phone="0")]})
    assert [r["run_id"] for r in load(settings, None, today=TODAY)["runs"]] == [kit.run_id(1), kit.run_id(3)]
    conn = warehouse_connection(settings)
    assert load_mark(conn) == kit.run_id(1)
    processed_lake.write_run(kit.run_id(2), {"address": [totesys.change("address", 2, phone="1")]},
                             ingested=False)
    assert [r["run_id"] for r in load(settings, None, today=TODAY)["runs"]] == [kit.run_id(2)]
    assert load_mark(conn) == kit.run_id(3)
    assert load(settings, None, today=TODAY)["runs"] == []


def test_a_reader_inside_two_star_tables_during_a_first_load_deadlocks_neither(
        settings, processed_lake, totesys, kit, warehouse_url, migrated, run_sql):
    """A first load rebuilds each empty table's indexes (bulk.py), which locks it against readers.
    Locked table after table, a reader that holds one table and then reads one locked earlier made a
    deadlock, and PostgreSQL aborted one of the two (the load, or the reader's query)."""
    manifest = processed_lake.write_run(kit.run_id(1), _all_versions(totesys))
    direct = [name for name in manifest["files"] if name in load_run_module.DIRECT_LOADABLE]
    first, last = direct[0], direct[-1]                      # the load's first and last tables, in its order
    migrated.run("START TRANSACTION")
    migrated.run(f"SELECT count(*) FROM {last}")            # the reader holds the last one
    outcome: list = []
    loader = threading.Thread(target=lambda: outcome.append(_try(lambda: load(settings, [kit.run_id(1)],
                                                                              today=TODAY))))
    loader.start()
    reader_pid, deadline = migrated.run("SELECT pg_backend_pid()")[0][0], time.monotonic() + 30
    while time.monotonic() < deadline and not run_sql(
            warehouse_url, "SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation "
                           "WHERE l.granted AND l.pid <> :reader AND c.relname = :t", reader=reader_pid, t=first)[0][0]:
        time.sleep(0.02)                                     # until the load's transaction has reached its tables
    time.sleep(0.3)                                          # and locked the first, or found it cannot yet
    read = _try(lambda: migrated.run(f"SELECT count(*) FROM {first}"))   # then reads the load's first table
    migrated.run("COMMIT") if not isinstance(read, Exception) else migrated.run("ROLLBACK")
    loader.join(timeout=60)
    assert not isinstance(read, Exception), read
    assert not isinstance(outcome[0], Exception), outcome[0]
    assert [r["run_id"] for r in outcome[0]["runs"]] == [kit.run_id(1)]


def _try(call):
    try:
        return call()
    except Exception as e:  # the caller asserts on it
        return e
