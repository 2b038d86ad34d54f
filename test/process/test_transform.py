"""The pure transforms: typed source rows in, the declared lake rows out (no I/O)."""
from datetime import date, datetime, time
from decimal import Decimal

import pyarrow as pa
import pytest

from totesys_etl.process import transform
from totesys_etl.schema import FACTS, SOURCE_TABLES, STATE_TABLES, source_table, star_table, state_table


def source_batch(table: str, rows: list[dict]) -> pa.RecordBatch:
    t = source_table(table)
    schema = pa.schema([pa.field(c.name, c.arrow_type) for c in t.columns])
    return pa.RecordBatch.from_pylist(rows, schema=schema)


SALES = {"sales_order_id": 7, "design_id": 2, "staff_id": 3, "counterparty_id": 4, "units_sold": 5,
         "unit_price": Decimal("12345678.91"), "currency_id": 1, "agreed_delivery_date": "2022-11-07",
         "agreed_payment_date": "2022-11-08", "agreed_delivery_location_id": 6,
         "created_at": datetime(2022, 11, 3, 14, 20, 52, 186000),
         "last_updated": datetime(2022, 11, 4, 23, 59, 59, 999000)}


def test_every_source_table_feeds_exactly_one_output():
    outputs = {s.name: transform.output_table(s.name).name for s in SOURCE_TABLES}
    assert outputs == {**{f.source: f.name for f in FACTS}, **{s.source: s.name for s in STATE_TABLES}}
    assert len(outputs) == 11
    with pytest.raises(KeyError):
        transform.output_table("_prisma_migrations")


def test_fact_sales_order():
    midnight = {**SALES, "sales_order_id": 8, "created_at": datetime(2023, 1, 1, 0, 0),
                "last_updated": datetime(2023, 1, 1, 0, 0), "unit_price": Decimal("0.05")}
    out = clean(transform.transform(star_table("fact_sales_order"), source_batch("sales_order", [SALES, midnight])))
    assert out.schema == star_table("fact_sales_order").arrow_schema
    assert out.to_pylist() == [
        {"sales_order_id": 7, "created_date": date(2022, 11, 3), "created_time": time(14, 20, 52, 186000),
         "last_updated_date": date(2022, 11, 4), "last_updated_time": time(23, 59, 59, 999000),
         "sales_staff_id": 3, "counterparty_id": 4, "units_sold": 5, "unit_price": Decimal("12345678.91"),
         "currency_id": 1, "design_id": 2, "agreed_payment_date": date(2022, 11, 8),
         "agreed_delivery_date": date(2022, 11, 7), "agreed_delivery_location_id": 6},
        {"sales_order_id": 8, "created_date": date(2023, 1, 1), "created_time": time(0, 0),
         "last_updated_date": date(2023, 1, 1), "last_updated_time": time(0, 0),
         "sales_staff_id": 3, "counterparty_id": 4, "units_sold": 5, "unit_price": Decimal("0.05"),
         "currency_id": 1, "design_id": 2, "agreed_payment_date": date(2022, 11, 8),
         "agreed_delivery_date": date(2022, 11, 7), "agreed_delivery_location_id": 6},
    ]


def test_fact_purchase_order_keeps_19_digit_money_exact():
    row = {"purchase_order_id": 1, "staff_id": 2, "counterparty_id": 3, "item_code": "007AB",
           "item_quantity": 10, "item_unit_price": Decimal("1234567890.123456789"), "currency_id": 4,
           "agreed_delivery_date": "2024-02-29", "agreed_payment_date": "2024-03-01",
           "agreed_delivery_location_id": 5, "created_at": datetime(2024, 2, 28, 12, 0, 0, 1),
           "last_updated": datetime(2024, 2, 28, 12, 0, 0, 1)}
    big = {**row, "purchase_order_id": 2, "item_unit_price": Decimal("12345678901234567.89")}
    out = clean(transform.transform(star_table("fact_purchase_order"), source_batch("purchase_order", [row, big])))
    assert out.to_pylist() == [
        {"purchase_order_id": 1, "created_date": date(2024, 2, 28), "created_time": time(12, 0, 0, 1),
         "last_updated_date": date(2024, 2, 28), "last_updated_time": time(12, 0, 0, 1), "staff_id": 2,
         "counterparty_id": 3, "item_code": "007AB", "item_quantity": 10,
         "item_unit_price": Decimal("1234567890.123456789"), "currency_id": 4,
         "agreed_delivery_date": date(2024, 2, 29), "agreed_payment_date": date(2024, 3, 1),
         "agreed_delivery_location_id": 5},
        {"purchase_order_id": 2, "created_date": date(2024, 2, 28), "created_time": time(12, 0, 0, 1),
         "last_updated_date": date(2024, 2, 28), "last_updated_time": time(12, 0, 0, 1), "staff_id": 2,
         "counterparty_id": 3, "item_code": "007AB", "item_quantity": 10,
         "item_unit_price": Decimal("12345678901234567.89"), "currency_id": 4,
         "agreed_delivery_date": date(2024, 2, 29), "agreed_payment_date": date(2024, 3, 1),
         "agreed_delivery_location_id": 5},
    ]


def test_fact_payment():
    row = {"payment_id": 3, "transaction_id": 4, "counterparty_id": 5, "payment_amount": Decimal("100"),
           "currency_id": 1, "payment_type_id": 2, "paid": False, "payment_date": "2022-12-31",
           "company_ac_number": 12345678, "counterparty_ac_number": 87654321,
           "created_at": datetime(2022, 12, 30, 8, 15, 0, 250000),
           "last_updated": datetime(2022, 12, 31, 17, 45)}
    out = clean(transform.transform(star_table("fact_payment"), source_batch("payment", [row])))
    assert out.to_pylist() == [
        {"payment_id": 3, "created_date": date(2022, 12, 30), "created_time": time(8, 15, 0, 250000),
         "last_updated_date": date(2022, 12, 31), "last_updated_time": time(17, 45), "transaction_id": 4,
         "counterparty_id": 5, "payment_amount": Decimal("100"), "currency_id": 1, "payment_type_id": 2,
         "paid": False, "payment_date": date(2022, 12, 31)}]
    assert sorted(transform.dates_of(star_table("fact_payment"), out).to_pylist()) == [
        date(2022, 12, 30), date(2022, 12, 31)]


def test_state_rows_are_the_source_rows_text_exact():
    rows = [{"address_id": 1, "address_line_1": ' "quoted", comma\nnewline 🚀 ', "address_line_2": "",
             "district": None, "city": "Åkersberga", "postal_code": "00123", "country": "N/A",
             "phone": "0161 496 0000", "created_at": datetime(2022, 11, 3, 14, 20, 52, 186000),
             "last_updated": datetime(2022, 11, 3, 14, 20, 52, 186000)}]
    out = clean(transform.transform(state_table("address"), source_batch("address", rows)))
    assert out.schema == state_table("address").arrow_schema
    assert out.to_pylist() == rows
    assert len(transform.dates_of(state_table("address"), out)) == 0


def test_dates_of_a_fact_are_every_date_it_refers_to():
    later = {**SALES, "sales_order_id": 9, "agreed_delivery_date": "2030-01-02"}
    out = clean(transform.transform(star_table("fact_sales_order"), source_batch("sales_order", [SALES, later])))
    assert sorted(transform.dates_of(star_table("fact_sales_order"), out).to_pylist()) == [
        date(2022, 11, 3), date(2022, 11, 4), date(2022, 11, 7), date(2022, 11, 8), date(2030, 1, 2)]


def clean(result):
    """The rows of a transform that found no problem."""
    out, problems = result
    assert problems == []
    return out


@pytest.mark.parametrize("bad", ["2022-02-30", "2022-13-03", "03/11/2022", "2022-11-03x", "", "soon", "0000-01-01"])
def test_an_unparsable_date_flags_its_row_alone(bad):
    rows = [SALES, {**SALES, "sales_order_id": 8, "agreed_payment_date": bad}, {**SALES, "sales_order_id": 9}]
    out, [problem] = transform.transform(star_table("fact_sales_order"), source_batch("sales_order", rows))
    assert problem.reason == "agreed_payment_date is not a date"
    assert problem.rows.to_pylist() == [False, True, False]
    assert out.column("agreed_payment_date").to_pylist() == [date(2022, 11, 8), None, date(2022, 11, 8)]


@pytest.mark.parametrize("text, day", [("2022-1-3", date(2022, 1, 3)), (" 2022-11-03 ", date(2022, 11, 3)),
                                       ("2022/11/3", date(2022, 11, 3)), ("2022.11.03", date(2022, 11, 3)),
                                       ("20221103", date(2022, 11, 3))])
def test_dates_postgresql_reads_are_read_alike(text, day):
    rows = [SALES, {**SALES, "agreed_payment_date": text}]
    out = clean(transform.transform(star_table("fact_sales_order"), source_batch("sales_order", rows)))
    assert out.column("agreed_payment_date").to_pylist() == [date(2022, 11, 8), day]
