"""`seed` against the session's real PostgreSQL: counts, reproducibility, values like the real snapshot's,
awkward values (extremes only with `awkward`), DDL, grants."""
from __future__ import annotations

import bisect
import re
import secrets
from datetime import date, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pg8000.native
import pytest
from pg8000.native import identifier

from totesys_etl.errors import ConfigurationError, EtlError
from totesys_etl.local.services import admin
from totesys_etl.local.services.fx_api import load_dataset
from totesys_etl.local.source.big_tables import History
from totesys_etl.local.source.seed import seed
from totesys_etl.local.source.source_db import csv_rows
from totesys_etl.schema import SOURCE_TABLES
from totesys_etl.schema.source import SOURCE_FOREIGN_KEYS

ORDERS = 2000


def digests(run_sql, url: str) -> dict[str, str]:
    """md5 of every row of each table, in id order: equal digests mean equal tables."""
    out = {}
    for table in SOURCE_TABLES:
        name, key = identifier(table.name), identifier(table.key[0])
        out[table.name] = run_sql(url, f"SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.{key})) FROM {name} t")[0][0]
    return out


@pytest.fixture
def other_source(postgres) -> str:
    name = f"seed{secrets.token_hex(4)}"
    admin.create_database(postgres, name)
    return postgres.url(name)


@pytest.fixture(scope="module")
def seeded(postgres):
    """One seeded source for the tests that only read it (seeding per test would dominate the run)."""
    name = f"seeded{secrets.token_hex(4)}"
    admin.create_database(postgres, name)
    admin.grant_reader(postgres, name, postgres.reader_password)
    source = SimpleNamespace(name=name, admin_url=postgres.url(name),
                             reader_url=postgres.url(name, admin.READER_ROLE, postgres.reader_password))
    return source, seed(source.admin_url, orders=ORDERS, seed=7)


@pytest.fixture(scope="module")
def awkward(postgres):
    """A seed with the extremes (`seed --awkward`), for the tests of what the pipeline must carry exactly."""
    name = f"awkward{secrets.token_hex(4)}"
    admin.create_database(postgres, name)
    url = postgres.url(name)
    return url, seed(url, orders=ORDERS, seed=7, awkward=True)


def test_exact_orders_and_the_ratios_between_tables(seeded, run_sql):
    source, counts = seeded
    actual = {t.name: run_sql(source.admin_url, f"SELECT count(*) FROM {identifier(t.name)}")[0][0]
              for t in SOURCE_TABLES}
    assert counts == actual
    assert actual["sales_order"] == ORDERS
    assert actual["purchase_order"] == ORDERS // 3
    assert actual["transaction"] == ORDERS + ORDERS // 3
    assert 0.8 * actual["transaction"] < actual["payment"] < 0.95 * actual["transaction"]
    assert 100 <= actual["address"] <= 1000 and 50 <= actual["counterparty"] <= 1000
    assert 100 <= actual["design"] <= 1000
    assert 15 <= actual["staff"] <= 25 and 6 <= actual["department"] <= 10
    assert sorted(r[0] for r in run_sql(source.admin_url, "SELECT currency_code FROM currency")) == \
        ["EUR", "GBP", "USD"]
    assert sorted(r[0] for r in run_sql(source.admin_url, "SELECT payment_type_name FROM payment_type")) == \
        ["PURCHASE_PAYMENT", "PURCHASE_REFUND", "SALES_RECEIPT", "SALES_REFUND"]
    # One transaction per order, of the order's kind, pointing at exactly one order.
    assert run_sql(source.admin_url, """
        SELECT count(*) FILTER (WHERE transaction_type = 'SALE' AND sales_order_id IS NOT NULL
                                AND purchase_order_id IS NULL),
               count(DISTINCT sales_order_id),
               count(*) FILTER (WHERE transaction_type = 'PURCHASE' AND purchase_order_id IS NOT NULL
                                AND sales_order_id IS NULL),
               count(DISTINCT purchase_order_id)
        FROM transaction""") == [[ORDERS, ORDERS, ORDERS // 3, ORDERS // 3]]
    # A payment's type, counterparty and currency agree with its order; one payment per transaction.
    assert run_sql(source.admin_url, """
        SELECT count(*) FROM payment p JOIN transaction t USING (transaction_id)
        JOIN payment_type y USING (payment_type_id)
        LEFT JOIN sales_order s USING (sales_order_id) LEFT JOIN purchase_order o USING (purchase_order_id)
        WHERE y.payment_type_name NOT LIKE CASE t.transaction_type WHEN 'SALE' THEN 'SALES_%' ELSE 'PURCHASE_%' END
           OR p.counterparty_id <> coalesce(s.counterparty_id, o.counterparty_id)
           OR p.currency_id <> coalesce(s.currency_id, o.currency_id)""") == [[0]]
    assert run_sql(source.admin_url, "SELECT count(DISTINCT transaction_id) FROM payment") == [[actual["payment"]]]


def test_same_seed_same_rows_other_seed_other_rows(source, other_source, run_sql):
    seed(source.admin_url, orders=500, seed=3)
    seed(other_source, orders=500, seed=3)
    first = digests(run_sql, source.admin_url)
    assert digests(run_sql, other_source) == first
    seed(other_source, orders=500, seed=4)
    other = digests(run_sql, other_source)
    constant = {"currency", "payment_type"}  # fixed reference data, whatever the seed
    assert {t for t in first if first[t] == other[t]} == constant


def test_seed_replaces_the_eleven_tables_and_leaves_others(source, run_sql):
    run_sql(source.admin_url, "CREATE TABLE _prisma_migrations (id int)")
    seed(source.admin_url, orders=50)
    run_sql(source.admin_url, "INSERT INTO sales_order SELECT * FROM sales_order LIMIT 0")
    seed(source.admin_url, orders=30)
    assert run_sql(source.admin_url, "SELECT count(*) FROM sales_order") == [[30]]
    assert run_sql(source.admin_url, "SELECT count(*) FROM _prisma_migrations") == [[0]]
    # ids are serials: an application's insert takes the next one
    assert run_sql(source.admin_url, "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, "
                   "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id, "
                   "created_at, last_updated) SELECT design_id, staff_id, counterparty_id, units_sold, unit_price, "
                   "currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id, created_at, "
                   "last_updated FROM sales_order WHERE sales_order_id = 1 RETURNING sales_order_id") == [[31]]
    assert seed(source.admin_url, orders=0)["sales_order"] == 0


def test_awkward_values_are_present(seeded, run_sql):
    source, _ = seeded
    url = source.admin_url
    texts = [v for table, columns in (("address", "address_line_1, address_line_2, district, city"),
                                      ("counterparty", "counterparty_legal_name, commercial_contact, "
                                                       "delivery_contact"),
                                      ("staff", "first_name, last_name"), ("design", "design_name, file_location"))
             for row in run_sql(url, f"SELECT {columns} FROM {table}") for v in row if v]
    assert any('"' in t for t in texts) and any("," in t for t in texts) and any("\n" in t for t in texts)
    assert any("'" in t for t in texts) and any("\\" in t for t in texts)
    assert any(any(127 < ord(c) <= 0xFFFF for c in t) for t in texts)  # non-ASCII letters
    assert any(any(ord(c) > 0xFFFF for c in t) for t in texts)  # emoji
    # leading zeros, and NULL next to '' in the same nullable column
    assert min(run_sql(url, "SELECT count(*) FILTER (WHERE postal_code LIKE '0%'), "
                            "count(*) FILTER (WHERE phone LIKE '0%'), count(*) FILTER (WHERE address_line_2 IS NULL), "
                            "count(*) FILTER (WHERE address_line_2 = ''), count(*) FILTER (WHERE district IS NULL) "
                            "FROM address")[0]) > 0
    assert run_sql(url, "SELECT count(*) FROM counterparty WHERE commercial_contact IS NULL")[0][0] > 0
    assert run_sql(url, "SELECT count(*) FROM department WHERE location IS NULL OR manager IS NULL")[0][0] > 0


@pytest.mark.parametrize("table, column", [("purchase_order", "item_unit_price"), ("payment", "payment_amount")])
def test_awkward_money_has_varied_scales_and_19_digit_values(awkward, run_sql, table, column):
    url, _ = awkward
    values = [r[0] for r in run_sql(url, f"SELECT {column} FROM {table}")]
    assert {-v.as_tuple().exponent for v in values} == set(range(9))
    assert any(len(v.as_tuple().digits) == 19 for v in values)
    # Inside what the warehouse carries exactly (contract §3): 20 integer digits, 10 places.
    assert all(abs(v) < Decimal(10) ** 20 and -v.as_tuple().exponent <= 10 and v > 0 for v in values)


def test_awkward_prices_and_dates_reach_the_extremes(awkward, run_sql):
    url, counts = awkward
    assert counts["sales_order"] == ORDERS
    biggest, far = run_sql(url, "SELECT max(unit_price), max(agreed_delivery_date::date - created_at::date) "
                                "FROM sales_order")[0]
    assert biggest > 1_000_000 and far > 100


def test_default_values_are_distributed_like_the_real_snapshot(seeded, run_sql):
    """test/data's snapshot: units 1,001 to 99,973, prices 2.00 to 4.00, quantities 1 to 999 at 3.32 to
    999.07, currencies and counterparties in near-equal shares, delivery 0 to 7 days after the order."""
    source, _ = seeded
    url = source.admin_url
    units, prices, lags, pay_lags = run_sql(url, """
        SELECT array[min(units_sold), max(units_sold)], array[min(unit_price), max(unit_price)],
               array[min(agreed_delivery_date::date - created_at::date),
                     max(agreed_delivery_date::date - created_at::date)],
               array[min(agreed_payment_date::date - created_at::date),
                     max(agreed_payment_date::date - created_at::date)]
        FROM sales_order""")[0]
    assert 1000 <= units[0] < 1100 and 99_000 < units[1] <= 100_000
    assert prices == [Decimal("2.00"), Decimal("4.00")] and lags == [0, 7] and pay_lags == [0, 6]
    quantity, price, scales = run_sql(url, "SELECT array[min(item_quantity), max(item_quantity)], "
                                           "array[min(item_unit_price), max(item_unit_price)], "
                                           "array_agg(DISTINCT scale(item_unit_price)) FROM purchase_order")[0]
    assert 1 <= quantity[0] < 10 and 990 < quantity[1] <= 1000
    assert Decimal(1) <= price[0] < 10 and 990 < price[1] <= 1000 and set(scales) == {2}
    for table in ("sales_order", "purchase_order"):
        shares = [r[0] for r in run_sql(url, f"SELECT count(*) FROM {table} GROUP BY currency_id")]
        assert len(shares) == 3 and max(shares) < 1.25 * min(shares), table
    # A payment is its order's value (a refund a part of it), due on the order's agreed payment date.
    assert run_sql(url, """
        SELECT count(*) FILTER (WHERE y.payment_type_name IN ('SALES_RECEIPT', 'PURCHASE_PAYMENT')
                                AND p.payment_amount <> coalesce(s.units_sold * s.unit_price,
                                                                 o.item_quantity * o.item_unit_price)),
               count(*) FILTER (WHERE y.payment_type_name LIKE '%REFUND' AND NOT p.payment_amount
                                BETWEEN 0.01 AND coalesce(s.units_sold * s.unit_price,
                                                          o.item_quantity * o.item_unit_price)),
               count(*) FILTER (WHERE p.payment_date <> coalesce(s.agreed_payment_date, o.agreed_payment_date))
        FROM payment p JOIN transaction t USING (transaction_id) JOIN payment_type y USING (payment_type_id)
        LEFT JOIN sales_order s USING (sales_order_id) LEFT JOIN purchase_order o USING (purchase_order_id)
    """) == [[0, 0, 0]]
    # Outstanding payments age like a ledger's: most are recent; past-due ones are mostly paid.
    today = History.ending().today
    overdue = dict(run_sql(url, """
        SELECT CASE WHEN payment_date::date >= :today THEN 'due' WHEN payment_date::date >= :today - 30 THEN '30'
                    ELSE 'older' END, round(avg(CASE WHEN paid THEN 0 ELSE 1 END), 3)
        FROM payment GROUP BY 1""", today=today))
    assert overdue["due"] > 0.5 and 0.1 < overdue["30"] < 0.5 and overdue["older"] < 0.05


def test_the_largest_order_is_at_most_1_percent_of_sales_in_gbp(source, run_sql):
    """The default seed (10,000 orders), valued in GBP at the local FX dataset's rates: no order dominates
    the total, as none does in the real snapshot (its largest is 0.024 %)."""
    seed(source.admin_url)
    rates = load_dataset()
    days = sorted(rates)
    values = []
    orders = run_sql(source.admin_url, "SELECT c.currency_code, s.agreed_payment_date, s.units_sold * s.unit_price "
                                       "FROM sales_order s JOIN currency c USING (currency_id)")
    for code, due, value in orders:
        day = days[bisect.bisect_right(days, date.fromisoformat(due)) - 1]   # that day's rate, or the last before
        values.append(value if code == "GBP" else value / Decimal(rates[day][code]))
    assert len(values) == 10_000
    assert max(values) <= sum(values) / 100
    assert Decimal(100_000) < sum(values) / len(values) < Decimal(200_000)   # the real mean order: £150,760


def test_timestamps_dates_and_history(seeded, run_sql):
    source, _ = seeded
    history = History.ending()
    HISTORY_START, REFERENCE = history.start, history.end
    for table in SOURCE_TABLES:
        row = run_sql(source.admin_url, f"""
            SELECT count(*) FILTER (WHERE last_updated < created_at),
                   count(*) FILTER (WHERE date_trunc('milliseconds', created_at) <> created_at
                                       OR date_trunc('milliseconds', last_updated) <> last_updated),
                   min(created_at), max(last_updated)
            FROM {identifier(table.name)}""")[0]
        assert row[:2] == [0, 0], table.name
        assert HISTORY_START <= row[2] and row[3] <= REFERENCE, table.name
    oldest, newest = run_sql(source.admin_url, "SELECT min(created_at), max(created_at) FROM sales_order")[0]
    assert oldest < HISTORY_START + timedelta(days=30) and newest > REFERENCE - timedelta(days=30)
    assert run_sql(source.admin_url, "SELECT count(*) FROM sales_order WHERE last_updated > created_at")[0][0] > 0
    for table, column in (("sales_order", "agreed_delivery_date"), ("sales_order", "agreed_payment_date"),
                          ("purchase_order", "agreed_delivery_date"), ("payment", "payment_date")):
        dates = {r[0] for r in run_sql(source.admin_url, f"SELECT DISTINCT {column} FROM {table}")}
        assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in dates), (table, column)


def test_keys_foreign_keys_indexes_sequences_and_statistics(seeded, run_sql):
    source, counts = seeded
    url = source.admin_url
    foreign = run_sql(url, """
        SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text
        FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.convalidated""")
    assert {(t.strip('"'), col): ref.strip('"') for t, col, ref in foreign} == SOURCE_FOREIGN_KEYS
    primary = run_sql(url, """
        SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace""")
    assert {(t.strip('"'), k) for t, k in primary} == {(t.name, t.key[0]) for t in SOURCE_TABLES}
    indexed = {r[0] for r in run_sql(url, "SELECT tablename FROM pg_indexes WHERE indexdef LIKE '%(last_updated)'")}
    assert indexed == {t.name for t in SOURCE_TABLES}
    for table in SOURCE_TABLES:
        sequence = run_sql(url, "SELECT pg_get_serial_sequence(:t, :c)", t=identifier(table.name), c=table.key[0])
        # generated ids are 1..n, no gaps, and the next one is n + 1
        assert run_sql(url, f"SELECT last_value, is_called FROM {sequence[0][0]}") == \
            [[counts[table.name] + 1, False]], table.name
    assert run_sql(url, "SELECT reltuples FROM pg_class WHERE relname = 'sales_order'") == [[ORDERS]]


def test_the_reader_role_reads_every_table_and_writes_nothing(seeded, run_sql):
    source, counts = seeded
    assert run_sql(source.reader_url, "SELECT current_user") == [[admin.READER_ROLE]]
    for table in SOURCE_TABLES:
        assert run_sql(source.reader_url, f"SELECT count(*) FROM {identifier(table.name)}") == [[counts[table.name]]]
    for statement in ("INSERT INTO currency (currency_code, created_at, last_updated) "
                      "VALUES ('CHF', LOCALTIMESTAMP, LOCALTIMESTAMP)",
                      "UPDATE address SET city = 'x'", "DELETE FROM payment", "TRUNCATE staff",
                      "CREATE TABLE t (x int)", "CREATE INDEX ON sales_order (units_sold)",
                      "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"):
        with pytest.raises(pg8000.native.DatabaseError) as refused:
            run_sql(source.reader_url, statement)
        assert refused.value.args[0]["C"] == "42501", statement
    assert run_sql(source.reader_url, "SELECT pg_has_role(current_user, 'pg_monitor', 'MEMBER')") == [[False]]


def test_bad_arguments_and_a_read_only_url_fail_with_a_reason(source):
    with pytest.raises(ConfigurationError):
        seed(source.admin_url, orders=-1)
    with pytest.raises(EtlError) as failed:
        seed(source.reader_url, orders=10)
    password = source.reader_url.split(":")[2].split("@")[0]
    assert "seed failed" in str(failed.value) and password not in str(failed.value)
    assert "\n" not in str(failed.value)


def test_csv_rows_keeps_null_and_empty_text_apart():
    assert csv_rows([(1, None, "", 'a "b",\nc', True, Decimal("1.50"))]) == b'1,,"","a ""b"",\nc",t,1.50\n'
