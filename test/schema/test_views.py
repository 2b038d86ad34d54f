"""The analytical views (issue 25) against a hand computation over known rows.

The rows hold several versions of one order, so the figures also check how "current" is chosen:
the greatest `etl_run_id` wins over a newer `last_updated`, and within one run the newer stamp wins.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timezone
from decimal import Decimal

import pg8000.native
import pytest
from pg8000.native import identifier

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.load.migrations import migrate
from totesys_etl.schema.views import (ANALYTICAL_VIEWS, DELIVERY_VIEWS, FX_VIEWS, LIVE_CURRENT_VIEWS,
                                      REPORT_VIEWS, SCHEMA, VIEWS, view)

R1, R2 = "20240101T000000000000Z", "20240201T000000000000Z"
CURRENCIES = {1: ("GBP", "Pound Sterling"), 2: ("USD", "US Dollar")}
LOCATIONS = {10: ("Leeds", "United Kingdom"), 11: ("Paris", "France")}
HOSTILE = 'O\'Brien "<script>alert(1)</script>"\nZoë 😀'
COUNTERPARTIES = {5: "Acme Totes", 6: HOSTILE}
STAFF = {7: ("Ann", "Lee", "Sales"), 8: ("Bob", "Kay", "Purchasing")}
DESIGNS = {20: "Tote A", 21: "Tote B"}
PAYMENT_TYPES = {1: "SALES_RECEIPT", 3: "PURCHASE_PAYMENT"}


def _sale(order, run, stamp, units, price, currency, staff=7, counterparty=5, design=20, location=10,
          created=None):
    stamp = datetime.fromisoformat(stamp)
    created = datetime.fromisoformat(created) if created else stamp
    return {"sales_order_id": order, "created_date": created.date(), "created_time": created.time(),
            "last_updated_date": stamp.date(), "last_updated_time": stamp.time(), "sales_staff_id": staff,
            "counterparty_id": counterparty, "units_sold": units, "unit_price": Decimal(price),
            "currency_id": currency, "design_id": design, "agreed_payment_date": created.date(),
            "agreed_delivery_date": created.date(), "agreed_delivery_location_id": location, "etl_run_id": run}


SALES = [
    _sale(1, R1, "2024-01-05 10:00", 10, "2.50", 1),
    _sale(1, R2, "2024-01-06 10:00", 12, "2.50", 1, created="2024-01-05 10:00"),       # current: newer run
    _sale(2, R2, "2024-02-01 09:00", 5, "10.00", 2, design=21, location=11),           # current: newer run...
    _sale(2, R1, "2024-02-03 09:00", 999, "10.00", 2, created="2024-02-01 09:00"),     # ...beats a newer stamp
    _sale(3, R2, "2024-04-02 12:00", 3, "1.99", 1, staff=8, counterparty=6, design=21, location=11),
    _sale(4, R2, "2024-04-10 08:00", 1, "4.00", 1, counterparty=6),
    _sale(4, R2, "2024-04-10 09:00", 7, "4.00", 1, counterparty=6, created="2024-04-10 08:00"),  # same run
]


def _purchase(order, run, stamp, quantity, price, currency):
    stamp = datetime.fromisoformat(stamp)
    return {"purchase_order_id": order, "created_date": date(2024, 1, 20), "created_time": time(8),
            "last_updated_date": stamp.date(), "last_updated_time": stamp.time(), "staff_id": 8,
            "counterparty_id": 5, "item_code": "X1", "item_quantity": quantity, "item_unit_price": Decimal(price),
            "currency_id": currency, "agreed_delivery_date": date(2024, 2, 1), "agreed_payment_date": date(2024, 2, 1),
            "agreed_delivery_location_id": 10, "etl_run_id": run}


PURCHASES = [
    _purchase(1, R1, "2024-01-20 08:00", 100, "0.1234567891", 1),
    _purchase(1, R2, "2024-01-21 08:00", 200, "0.1234567891", 1),   # current
    _purchase(2, R2, "2024-01-22 08:00", 3, "1000000000000000000.5", 2),
]


def _payment(payment, run, stamp, amount, currency, type_, paid):
    stamp = datetime.fromisoformat(stamp)
    return {"payment_id": payment, "created_date": date(2024, 3, 1), "created_time": time(8),
            "last_updated_date": stamp.date(), "last_updated_time": stamp.time(), "transaction_id": payment,
            "counterparty_id": 5, "payment_amount": Decimal(amount), "currency_id": currency,
            "payment_type_id": type_, "paid": paid, "payment_date": date(2024, 3, 2), "etl_run_id": run}


PAYMENTS = [
    _payment(1, R1, "2024-03-01 08:00", "30.00", 1, 1, False),
    _payment(1, R2, "2024-03-02 08:00", "30.00", 1, 1, True),   # current: now paid
    _payment(2, R2, "2024-03-01 08:00", "5.5", 1, 1, False),
    _payment(3, R2, "2024-03-01 08:00", "12.25", 2, 3, True),
]


def _delivery(event, order, status, at, city, courier):
    at = datetime.fromisoformat(at)
    return {"event_id": event, "sales_order_id": order, "status": status, "event_date": at.date(),
            "event_time": at.time(), "city": city, "courier": courier, "etl_run_id": R2}


#: Courier events against the current agreed delivery dates above (order 1: 2024-01-05, order 2:
#: 2024-02-01, order 4: 2024-04-10): on time, delivered again later (the first counts), late by two
#: days, only collected (not a delivery), on time, and an order the warehouse does not hold.
DELIVERIES = [
    _delivery("e1", 1, "delivered", "2024-01-05 17:00", "Leeds", "DPD"),
    _delivery("e1b", 1, "delivered", "2024-01-09 09:00", "Leeds", "DPD"),
    _delivery("e2", 2, "delivered", "2024-02-03 11:00", "Paris", "DPD"),
    _delivery("e3", 3, "collected", "2024-04-01 08:00", "Paris", "UPS"),
    _delivery("e4", 4, "delivered", "2024-04-09 12:00", "Leeds", "UPS"),
    _delivery("e9", 99, "delivered", "2024-04-20 12:00", "Leeds", "UPS"),
]


#: Units per GBP by (day, currency): USD on 2024-02-01 carried; no rate for 2024-04-10 (order 4 is not valued).
RATES = {(date(2024, 1, 5), 1): (Decimal(1), False), (date(2024, 2, 1), 1): (Decimal(1), False),
         (date(2024, 2, 1), 2): (Decimal("1.25"), True), (date(2024, 4, 2), 1): (Decimal(1), False)}


def _insert(conn, table, row):
    columns = list(row)
    conn.run(f"INSERT INTO {identifier(table)} ({', '.join(identifier(c) for c in columns)}) "  # nosec
             f"VALUES ({', '.join(':' + c for c in columns)})", **row)


def fill(conn):
    """The known rows above, dimensions included."""
    for i, (code, name) in CURRENCIES.items():
        _insert(conn, "dim_currency", {"currency_id": i, "currency_code": code, "currency_name": name})
    for i, (city, country) in LOCATIONS.items():
        _insert(conn, "dim_location", {"location_id": i, "address_line_1": "1 Road", "address_line_2": None,
                                       "district": None, "city": city, "postal_code": "P", "country": country,
                                       "phone": "1"})
    for i, name in COUNTERPARTIES.items():
        _insert(conn, "dim_counterparty", {
            "counterparty_id": i, "counterparty_legal_name": name, "counterparty_legal_address_line_1": "1 Road",
            "counterparty_legal_address_line_2": None, "counterparty_legal_district": None,
            "counterparty_legal_city": "Leeds", "counterparty_legal_postal_code": "P",
            "counterparty_legal_country": "United Kingdom", "counterparty_legal_phone_number": "1"})
    for i, (first, last, department) in STAFF.items():
        _insert(conn, "dim_staff", {"staff_id": i, "first_name": first, "last_name": last,
                                    "department_name": department, "location": "Leeds", "email_address": "e"})
    for i, name in DESIGNS.items():
        _insert(conn, "dim_design", {"design_id": i, "design_name": name, "file_location": "/", "file_name": "f"})
    for i, name in PAYMENT_TYPES.items():
        _insert(conn, "dim_payment_type", {"payment_type_id": i, "payment_type_name": name})
    for table, rows in (("fact_sales_order", SALES), ("fact_purchase_order", PURCHASES), ("fact_payment", PAYMENTS),
                        ("fact_delivery", DELIVERIES)):
        for row in rows:
            _insert(conn, table, row)
    for (day, currency), (rate, carried) in RATES.items():
        _insert(conn, "fact_exchange_rate", {"rate_date": day, "currency_id": currency, "units_per_gbp": rate,
                                             "carried": carried, "etl_run_id": R2})
    _insert(conn, "etl_src_design", {"design_id": 20, "design_name": "Tote A", "file_location": "/",
                                     "file_name": "f", "created_at": datetime(2024, 1, 1),
                                     "last_updated": datetime(2024, 5, 1, 12, 30), "etl_run_id": R2})
    for run, loaded in ((R1, datetime(2024, 1, 1, 0, 5, tzinfo=timezone.utc)),
                        (R2, datetime(2024, 2, 1, 0, 5, tzinfo=timezone.utc))):
        conn.run("INSERT INTO etl_load_ledger (run_id, loaded_at, rows) VALUES (:r, :l, '{}')", r=run, l=loaded)


def current(rows, key):
    """The hand rule: per id, the greatest (etl_run_id, last_updated_date, last_updated_time)."""
    best = {}
    for row in rows:
        rank = (row["etl_run_id"], row["last_updated_date"], row["last_updated_time"])
        if row[key] not in best or rank > best[row[key]][0]:
            best[row[key]] = (rank, row)
    return [row for _, row in best.values()]


def grouped(rows, key, value):
    """{key(row): [count, units, value]} summed by hand."""
    out = defaultdict(lambda: [0, 0, Decimal(0)])
    for row in rows:
        figures = out[key(row)]
        figures[0] += 1
        figures[1] += row.get("units_sold", 0)
        figures[2] += value(row)
    return {k: tuple(v) for k, v in out.items()}


def sales_value(row):
    return row["units_sold"] * row["unit_price"]


def code(row):
    return CURRENCIES[row["currency_id"]][0]


@pytest.fixture
def warehouse(warehouse_url):
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    migrate(conn)
    fill(conn)
    yield conn
    conn.close()


def rows(conn, name, columns):
    return [tuple(r) for r in conn.run(f"SELECT {columns} FROM {view(name).qualified}")]  # nosec B608


def test_current_is_the_newest_run_then_the_newest_stamp(warehouse):
    got = {r[0]: r[1:] for r in rows(warehouse, "current_sales_order", "sales_order_id, units_sold, sales_value")}
    assert got == {1: (12, Decimal("30.00")), 2: (5, Decimal("50.00")), 3: (3, Decimal("5.97")),
                   4: (7, Decimal("28.00"))}
    assert {r["sales_order_id"]: (r["units_sold"], sales_value(r)) for r in current(SALES, "sales_order_id")} == got
    purchases = dict(rows(warehouse, "current_purchase_order", "purchase_order_id, purchase_value"))
    assert purchases == {1: Decimal("24.69135782"), 2: Decimal("3000000000000000001.5")}
    assert dict(rows(warehouse, "current_payment", "payment_id, paid")) == {1: True, 2: False, 3: True}


def test_sales_by_month_and_quarter(warehouse):
    sales = current(SALES, "sales_order_id")
    by_month = grouped(sales, lambda r: (r["created_date"].replace(day=1), code(r)), sales_value)
    got = {(r[0], r[1]): tuple(r[2:]) for r in rows(warehouse, "sales_by_month",
                                                    "month, currency_code, orders, units_sold, sales_value")}
    assert got == by_month
    assert got[(date(2024, 4, 1), "GBP")] == (2, 10, Decimal("33.97"))   # orders 3 and 4 (its newest stamp)
    by_quarter = grouped(sales, lambda r: (r["created_date"].year, (r["created_date"].month + 2) // 3, code(r)),
                         sales_value)
    assert {tuple(r[:3]): tuple(r[3:]) for r in rows(
        warehouse, "sales_by_quarter", "year, quarter, currency_code, orders, units_sold, sales_value")} == by_quarter
    assert rows(warehouse, "sales_by_month", "year, quarter") and all(
        (m.year, (m.month + 2) // 3) == (y, q) for m, y, q in rows(warehouse, "sales_by_month", "month, year, quarter"))


def test_sales_by_place_counterparty_design_staff_department_currency(warehouse):
    sales = current(SALES, "sales_order_id")
    place = grouped(sales, lambda r: (*reversed(LOCATIONS[r["agreed_delivery_location_id"]]), code(r)), sales_value)
    assert {tuple(r[:3]): tuple(r[3:]) for r in rows(
        warehouse, "sales_by_delivery_location", "country, city, currency_code, orders, units_sold, sales_value")
    } == place
    by_counterparty = grouped(sales, lambda r: (r["counterparty_id"], COUNTERPARTIES[r["counterparty_id"]], code(r)),
                              sales_value)
    assert {tuple(r[:3]): tuple(r[3:]) for r in rows(
        warehouse, "sales_by_counterparty",
        "counterparty_id, counterparty_legal_name, currency_code, orders, units_sold, sales_value")
    } == by_counterparty
    designs = grouped(sales, lambda r: (r["design_id"], DESIGNS[r["design_id"]]), lambda r: 0)
    ranked = sorted(designs, key=lambda k: -designs[k][1])
    assert sorted(rows(warehouse, "top_designs", "design_id, design_name, orders, units_sold, units_rank"),
                  key=lambda r: r[-1]) == [
        (*k, designs[k][0], designs[k][1], i) for i, k in enumerate(ranked, 1)]
    assert ranked[0] == (20, "Tote A")   # 12 + 7 units, against 5 + 3
    staff = grouped(sales, lambda r: (r["sales_staff_id"], *STAFF[r["sales_staff_id"]], code(r)), sales_value)
    assert {tuple(r[:5]): tuple(r[5:]) for r in rows(
        warehouse, "sales_by_staff",
        "staff_id, first_name, last_name, department_name, currency_code, orders, units_sold, sales_value")} == staff
    departments = grouped(sales, lambda r: (STAFF[r["sales_staff_id"]][2], code(r)), sales_value)
    assert {tuple(r[:2]): tuple(r[2:]) for r in rows(
        warehouse, "sales_by_department", "department_name, currency_code, orders, units_sold, sales_value")
    } == departments
    currencies = grouped(sales, lambda r: (*CURRENCIES[r["currency_id"]],), sales_value)
    assert {tuple(r[:2]): tuple(r[2:]) for r in rows(
        warehouse, "sales_by_currency", "currency_code, currency_name, orders, units_sold, sales_value")
    } == currencies
    assert currencies[("USD", "US Dollar")] == (1, 5, Decimal("50.00"))   # not the 999 units of an older run


def test_purchases_against_sales_per_month(warehouse):
    sales = grouped(current(SALES, "sales_order_id"), lambda r: (r["created_date"].replace(day=1), code(r)),
                    sales_value)
    purchases = grouped(current(PURCHASES, "purchase_order_id"),
                        lambda r: (r["created_date"].replace(day=1), code(r)),
                        lambda r: r["item_quantity"] * r["item_unit_price"])
    want = {k: (sales.get(k, (0, 0, 0))[0], sales.get(k, (0, 0, 0))[2],
                purchases.get(k, (0, 0, 0))[0], purchases.get(k, (0, 0, 0))[2]) for k in {*sales, *purchases}}
    got = {tuple(r[:2]): tuple(r[2:]) for r in rows(
        warehouse, "purchases_and_sales_by_month",
        "month, currency_code, sales_orders, sales_value, purchase_orders, purchase_value")}
    assert got == want
    assert got[(date(2024, 1, 1), "GBP")] == (1, Decimal("30.00"), 1, Decimal("24.69135782"))


def test_payments_paid_and_outstanding_by_type(warehouse):
    want = defaultdict(lambda: [0, Decimal(0), 0, Decimal(0)])
    for p in current(PAYMENTS, "payment_id"):
        figures = want[(PAYMENT_TYPES[p["payment_type_id"]], code(p))]
        figures[0 if p["paid"] else 2] += 1
        figures[1 if p["paid"] else 3] += p["payment_amount"]
    got = {tuple(r[:2]): tuple(r[2:]) for r in rows(
        warehouse, "payments_by_type", "payment_type_name, currency_code, paid_payments, paid_value, "
                                       "outstanding_payments, outstanding_value")}
    assert got == {k: tuple(v) for k, v in want.items()}
    assert got[("SALES_RECEIPT", "GBP")] == (1, Decimal("30.00"), 1, Decimal("5.5"))


def test_freshness_names_the_newest_run_and_source_change(warehouse):
    assert rows(warehouse, "freshness", "newest_run_id, last_loaded_at, runs_loaded, newest_source_change") == [
        (R2, datetime(2024, 2, 1, 0, 5, tzinfo=timezone.utc), 2, datetime(2024, 5, 1, 12, 30))]
    warehouse.run("DELETE FROM etl_src_design")
    assert rows(warehouse, "freshness", "newest_source_change") == [(datetime(2024, 4, 10, 9, 0),)]


def test_empty_warehouse_views_are_empty_and_freshness_is_one_row(warehouse_url):
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    try:
        migrate(conn)
        for v in ANALYTICAL_VIEWS:
            count = conn.run(f"SELECT count(*) FROM {v.qualified}")[0][0]  # nosec B608
            assert count == (1 if v.name == "freshness" else 0), v.name
        assert conn.run(f"SELECT * FROM {view('freshness').qualified}") == [[None, None, 0, None]]  # nosec B608
    finally:
        conn.close()


def test_every_view_is_in_its_own_schema_with_its_description(warehouse):
    got = dict(warehouse.run("SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'v'",
                             s=SCHEMA))
    # Migration 7 replaced the current-version views (LIVE_CURRENT_VIEWS): theirs are the descriptions.
    every = (*VIEWS, *FX_VIEWS, *DELIVERY_VIEWS, *REPORT_VIEWS, *LIVE_CURRENT_VIEWS)
    assert got == {v.name: v.description for v in every}
    assert all(v.description and "current" in view(f"current_{t}").description
               for v in VIEWS for t in ("sales_order", "purchase_order", "payment"))


def test_on_time_delivery_is_the_first_delivery_against_the_current_agreed_date(warehouse):
    rows = warehouse.run("SELECT month, city, courier, deliveries, on_time, late, without_order, on_time_rate, "
                         "mean_days_late FROM analytics.delivery_on_time ORDER BY 1, 2, 3")
    assert rows == [[date(2024, 1, 1), "Leeds", "DPD", 1, 1, 0, 0, Decimal("1.0000"), None],
                    [date(2024, 2, 1), "Paris", "DPD", 1, 0, 1, 0, Decimal("0.0000"), Decimal("2.00")],
                    [date(2024, 4, 1), "Leeds", "UPS", 2, 1, 0, 1, Decimal("1.0000"), None]]


def in_gbp(row, value):
    """The hand rule: the value over its agreed payment date's rate, or None without one."""
    rate = RATES.get((row["agreed_payment_date"], row["currency_id"]))
    return None if rate is None else value / rate[0]


def test_sales_and_purchases_in_gbp_by_month_customer_design_country(warehouse):
    sales = {r["sales_order_id"]: (r, in_gbp(r, sales_value(r))) for r in current(SALES, "sales_order_id")}
    assert {k: v for k, (_, v) in sales.items()} == {1: Decimal("30.00"), 2: Decimal("40.00"), 3: Decimal("5.97"),
                                                     4: None}
    got = {r[0]: tuple(r[1:]) for r in rows(warehouse, "sales_in_gbp", "sales_order_id, sales_value_gbp, "
                                            "rate_carried, created_date, counterparty_id, design_id")}
    assert got == {i: (v, RATES.get((r["agreed_payment_date"], r["currency_id"]), (None, None))[1],
                       r["created_date"], r["counterparty_id"], r["design_id"]) for i, (r, v) in sales.items()}
    purchases = [in_gbp(r, r["item_quantity"] * r["item_unit_price"]) for r in current(PURCHASES, "purchase_order_id")]
    assert sorted(r[0] for r in rows(warehouse, "purchases_in_gbp", "purchase_value_gbp")) == sorted(purchases)

    def by(key):
        out = defaultdict(lambda: [0, 0, None, 0])
        for r, v in sales.values():
            figures = out[key(r)]
            figures[0] += 1
            figures[1] += r["units_sold"]
            figures[2] = figures[2] if v is None else (figures[2] or 0) + v
            figures[3] += v is None
        return {k: tuple(v) for k, v in out.items()}

    assert {(r[0], r[1]): tuple(r[2:]) for r in rows(
        warehouse, "sales_in_gbp_by_counterparty",
        "counterparty_id, counterparty_legal_name, orders, units_sold, sales_value_gbp, orders_without_rate")} == \
        by(lambda r: (r["counterparty_id"], COUNTERPARTIES[r["counterparty_id"]]))
    assert {(r[0], r[1]): tuple(r[2:]) for r in rows(
        warehouse, "sales_in_gbp_by_design",
        "design_id, design_name, orders, units_sold, sales_value_gbp, orders_without_rate")} == \
        by(lambda r: (r["design_id"], DESIGNS[r["design_id"]]))
    assert {r[0]: tuple(r[1:]) for r in rows(
        warehouse, "sales_in_gbp_by_country", "country, orders, units_sold, sales_value_gbp, orders_without_rate")
    } == {k[0]: v for k, v in by(lambda r: (LOCATIONS[r["agreed_delivery_location_id"]][1],)).items()}
    months = {r[0]: tuple(r[1:]) for r in rows(
        warehouse, "gbp_by_month", "month, sales_orders, sales_value_gbp, sales_orders_without_rate, "
                                   "sales_orders_at_carried_rate, purchase_orders, purchase_value_gbp")}
    assert months == {date(2024, 1, 1): (1, Decimal("30.00"), 0, 0, 2, sum(purchases)),
                      date(2024, 2, 1): (1, Decimal("40.00"), 0, 1, 0, None),
                      date(2024, 4, 1): (2, Decimal("5.97"), 1, 0, 0, None)}   # no March: a gap, not a zero


def test_namesakes_are_counted_so_the_report_can_tell_them_apart(warehouse):
    warehouse.run("UPDATE dim_design SET design_name = 'Bronze'")
    assert sorted(rows(warehouse, "sales_in_gbp_by_design", "design_id, namesakes")) == [(20, 2), (21, 2)]
    assert sorted(rows(warehouse, "sales_in_gbp_by_counterparty", "counterparty_id, namesakes")) == [(5, 1), (6, 1)]


def test_payments_outstanding_with_direction_age_and_gbp_at_the_newest_rate(warehouse):
    unpaid = [p for p in current(PAYMENTS, "payment_id") if not p["paid"]]
    overdue = (datetime.now(timezone.utc).date() - date(2024, 3, 2)).days
    assert rows(warehouse, "payments_outstanding", "payment_id, direction, payment_amount, days_overdue, age, "
                "age_order, rate_date, payment_amount_gbp") == [
        (p["payment_id"], "to receive", p["payment_amount"], overdue, "over 90 days", 5, date(2024, 4, 2),
         p["payment_amount"]) for p in unpaid]
    warehouse.run("UPDATE fact_payment SET payment_date = (now() AT TIME ZONE 'UTC')::date + 3, payment_type_id = 3, "
                  "currency_id = 2")
    assert rows(warehouse, "payments_outstanding", "direction, days_overdue, age, age_order, payment_amount_gbp") == [
        ("to pay", -3, "not yet due", 1, Decimal("5.5") / Decimal("1.25"))]
