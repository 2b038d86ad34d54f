"""Where a first FX backfill starts: the earliest date any fact refers to, read from the real source.

`earliest_fact_date` finds a date text by its shape and byte order, and runs the exact pattern only
on a column whose smallest shaped text is not all digits (issue 38: the pattern on every row was
0.7 s of a 100,000-order first load). These tests hold it to the exact pattern's answer.
"""
from __future__ import annotations

from datetime import date, datetime

import pytest

from totesys_etl.ingest.fx import earliest_fact_date


@pytest.fixture
def source(totesys):
    """The fixture's rows dated 2024-06-01 12:00; their date texts are not dates (`payment_date 1`)."""
    for table in ("sales_order", "purchase_order", "payment"):
        stamp = "'2024-06-01 12:00'"
        totesys.run(f"UPDATE {table} SET created_at = {stamp}, last_updated = {stamp}")  # nosec B608
    return totesys


def earliest(db) -> date | None:
    return earliest_fact_date(db.conn)


def test_a_timestamp_is_the_earliest_when_no_text_is_a_date(source):
    assert earliest(source) == date(2024, 6, 1)


def test_a_date_text_earlier_than_every_timestamp_is_the_start(source):
    source.run("UPDATE purchase_order SET agreed_payment_date = '2023-01-31' WHERE purchase_order_id = 2")
    source.run("UPDATE payment SET payment_date = '2023-03-01' WHERE payment_id = 1")
    assert earliest(source) == date(2023, 1, 31)


@pytest.mark.parametrize("shaped", ["1x99-01-01", "0000-0a-00", "    -  -  ", "2022/01/01", "２０２２-01-01"])
def test_a_text_of_the_right_shape_but_not_digits_never_hides_an_earlier_date(source, shaped):
    """Byte order puts these texts before (or among) the real dates of their column; the exact
    pattern then decides, and the column's earliest real date still counts."""
    source.run("UPDATE sales_order SET agreed_delivery_date = :shaped WHERE sales_order_id = 1", shaped=shaped)
    source.run("UPDATE sales_order SET agreed_delivery_date = '2022-12-24' WHERE sales_order_id = 2")
    source.run("UPDATE sales_order SET agreed_delivery_date = '2023-05-05' WHERE sales_order_id = 3")
    assert earliest(source) == date(2022, 12, 24)


def test_texts_that_only_look_like_dates_are_left_out(source):
    """Padded, unpadded or day-first texts are held back by the processor; they move no start."""
    for row, text in enumerate((" 2020-01-01", "2020-1-01", "01-01-2020"), start=1):
        source.run("UPDATE payment SET payment_date = :text WHERE payment_id = :row", text=text, row=row)
    assert earliest(source) == date(2024, 6, 1)


def test_an_empty_source_has_no_start(source):
    for table in ("payment", "sales_order", "purchase_order"):
        source.run(f"DELETE FROM {table}")  # nosec B608
    assert earliest(source) is None


def test_timestamps_count_by_their_date(source):
    source.run("UPDATE sales_order SET created_at = :at WHERE sales_order_id = 3", at=datetime(2021, 2, 3, 23, 59))
    assert earliest(source) == date(2021, 2, 3)
