"""The run's `dim_date` rows, computed in Arrow from the dates its facts refer to.

The rows are exactly `calendar.date_rows` (a test holds the two equal), but built with Arrow
compute instead of Python objects: converting Python values makes pyarrow import pandas, about a
second per process, which would dominate a small run. Dates are kept as small Arrow arrays of
distinct values, so a million-row file adds a few hundred bytes, not a Python object per row.
"""
from __future__ import annotations

from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from totesys_etl.schema import DIM_DATE


def distinct(arrays: Iterable[pa.Array]) -> pa.Array:
    """The distinct non-null dates of some date32 arrays, in date order."""
    parts = [a for a in arrays if len(a)]
    if not parts:
        return pa.nulls(0, pa.date32())
    values = pc.unique(pc.drop_null(pa.concat_arrays(parts)))
    return pc.take(values, pc.sort_indices(values))


def date_rows(dates: pa.Array) -> pa.Table:
    """dim_date rows (SPEC §3: ISO day of week, Monday 1; English names) for distinct, sorted dates."""
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
    return pa.Table.from_arrays([columns[name] for name in DIM_DATE.column_names],
                                schema=DIM_DATE.arrow_schema)
