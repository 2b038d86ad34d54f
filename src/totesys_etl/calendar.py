"""The date dimension's rows, derived from dates alone (a pure function, shared by the processor,
which emits the dates its facts need, and the loader, which seeds the calendar range)."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Iterable

import pyarrow as pa

from totesys_etl.schema import DIM_DATE

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")


def date_rows(dates: Iterable[date]) -> pa.Table:
    """dim_date rows for each distinct date, in date order (ISO day of week: Monday is 1)."""
    days = sorted(set(dates))
    columns = {
        "date_id": days,
        "year": [d.year for d in days],
        "month": [d.month for d in days],
        "day": [d.day for d in days],
        "day_of_week": [d.isoweekday() for d in days],
        "day_name": [_DAY_NAMES[d.weekday()] for d in days],
        "month_name": [_MONTH_NAMES[d.month - 1] for d in days],
        "quarter": [(d.month - 1) // 3 + 1 for d in days],
    }
    return pa.Table.from_pydict(columns, schema=DIM_DATE.arrow_schema)


def date_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
