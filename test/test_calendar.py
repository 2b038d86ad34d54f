from datetime import date, timedelta

import pyarrow as pa

from totesys_etl.calendar import date_range, date_rows, distinct_dates
from totesys_etl.schema import DIM_DATE

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def _expected(day: date) -> dict:
    """An independent oracle: Python's own calendar."""
    return {"date_id": day, "year": day.year, "month": day.month, "day": day.day, "day_of_week": day.isoweekday(),
            "day_name": DAYS[day.weekday()], "month_name": MONTHS[day.month - 1], "quarter": (day.month - 1) // 3 + 1}


def test_rows_follow_iso_weeks_english_names_and_quarters_over_decades():
    first, last = date(1999, 12, 25), date(2031, 1, 7)
    table = date_rows(date_range(first, last))
    assert table.schema == DIM_DATE.arrow_schema
    assert table.to_pylist() == [_expected(first + timedelta(days=n)) for n in range((last - first).days + 1)]


def test_a_leap_day_and_a_sunday():
    rows = date_rows(pa.array([date(2024, 2, 29), date(2024, 12, 29)], pa.date32())).to_pylist()
    assert [(r["day_name"], r["day_of_week"], r["quarter"]) for r in rows] == [("Thursday", 4, 1), ("Sunday", 7, 4)]


def test_date_range_is_inclusive():
    days = date_range(date(2024, 2, 28), date(2024, 3, 1)).to_pylist()
    assert days == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]


def test_distinct_sorts_and_drops_repeats_and_nulls():
    parts = [pa.array([date(2023, 1, 2), None, date(2022, 1, 1)], pa.date32()),
             pa.array([date(2022, 1, 1)], pa.date32()), pa.array([], pa.date32())]
    assert distinct_dates(parts).to_pylist() == [date(2022, 1, 1), date(2023, 1, 2)]
    assert distinct_dates([]).to_pylist() == []
