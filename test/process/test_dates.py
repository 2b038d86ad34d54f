"""The processor's Arrow-built dim_date rows are exactly the shared calendar's."""
from datetime import date

import pyarrow as pa

from totesys_etl import calendar
from totesys_etl.process import dates
from totesys_etl.schema import DIM_DATE


def test_rows_equal_the_shared_calendar_over_decades():
    days = calendar.date_range(date(1999, 12, 25), date(2031, 1, 7))
    table = dates.date_rows(pa.array(days, pa.date32()))
    assert table.schema == DIM_DATE.arrow_schema
    assert table.equals(calendar.date_rows(days))


def test_a_known_day():
    [row] = dates.date_rows(pa.array([date(2024, 2, 29)], pa.date32())).to_pylist()
    assert row == {"date_id": date(2024, 2, 29), "year": 2024, "month": 2, "day": 29, "day_of_week": 4,
                   "day_name": "Thursday", "month_name": "February", "quarter": 1}


def test_distinct_sorts_and_drops_repeats_and_nulls():
    parts = [pa.array([date(2023, 1, 2), None, date(2022, 1, 1)], pa.date32()),
             pa.array([date(2022, 1, 1)], pa.date32()), pa.array([], pa.date32())]
    assert dates.distinct(parts).to_pylist() == [date(2022, 1, 1), date(2023, 1, 2)]
    assert dates.distinct([]).to_pylist() == []
