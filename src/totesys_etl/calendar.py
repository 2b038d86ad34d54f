"""The date dimension's rows, derived from dates alone: the processor emits the dates its facts
refer to, the loader seeds the calendar range; both call these pure functions.

Everything is Arrow compute, never Python date objects: converting Python values makes pyarrow
import pandas (about a second per process), which would dominate a small Lambda run.
"""
from __future__ import annotations

import array
from datetime import date
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from totesys_etl.schema import DIM_DATE

_EPOCH = date(1970, 1, 1)


def date_range(first: date, last: date) -> pa.Array:
    """Every date from `first` to `last` inclusive, as a date32 array."""
    start, stop = (first - _EPOCH).days, (last - _EPOCH).days + 1
    # From a buffer, not pa.array(range(...)): converting Python values imports pandas (~0.4 s
    # of a first load's handler time, measured by `make bench`).
    days = array.array("i", range(start, max(start, stop)))
    return pa.Array.from_buffers(pa.int32(), len(days), [None, pa.py_buffer(days)]).cast(pa.date32())


def distinct_dates(arrays: Iterable[pa.Array]) -> pa.Array:
    """The distinct non-null dates of some date32 arrays, in date order."""
    parts = [a for a in arrays if len(a)]
    if not parts:
        return pa.nulls(0, pa.date32())
    values = pc.unique(pc.drop_null(pa.concat_arrays(parts)))
    return pc.take(values, pc.sort_indices(values))


def date_rows(dates: pa.Array) -> pa.Table:
    """dim_date rows for distinct, sorted dates (contract §3: ISO day of week, Monday 1; English names)."""
    stamps = dates.cast(pa.timestamp("s"))
    int32 = pa.int32()
    columns = {
        "date_id": dates,
        "year": pc.year(dates).cast(int32),
        "month": pc.month(dates).cast(int32),
        "day": pc.day(dates).cast(int32),
        "day_of_week": pc.day_of_week(dates, count_from_zero=False, week_start=1).cast(int32),
        "day_name": pc.strftime(stamps, format="%A", locale="C"),
        "month_name": pc.strftime(stamps, format="%B", locale="C"),
        "quarter": pc.quarter(dates).cast(int32),
    }
    return pa.Table.from_arrays([columns[name] for name in DIM_DATE.column_names], schema=DIM_DATE.arrow_schema)
