"""Source rows to lake rows: pure functions from Arrow to Arrow, driven by the declarations.

Each source table feeds exactly one output: a fact (`fact.source`) or the loader's state table
(`etl_src_<table>`). Every output column is computed from its declaration (`Column.source`,
`Column.derive`), so adding a column to `schema/warehouse.py` needs no change here. A value a
derivation cannot give (a date text that is not a date) is a `Problem` of its row alone.
"""
from __future__ import annotations

import re
from datetime import date
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from totesys_etl.process.rows import Problem
from totesys_etl.schema import API_FACTS, DELETE_LOGS, EVENT_FACTS, FACTS, STATE_TABLES, Column, Table

#: The date texts PostgreSQL's date input reads that are plausible in a varchar date column:
#: year-month-day with `-`, `/` or `.` and one- or two-digit month and day, or YYYYMMDD, with
#: surrounding whitespace. Anything else is held back (never guessed: `05/01/2024` depends on
#: the server's DateStyle).
_DATE_TEXT = re.compile(r"[ \t\n\r\f\v]*(?:(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})|(\d{4})(\d{2})(\d{2}))[ \t\n\r\f\v]*")
#: PostgreSQL has no year 0; Arrow would read one. Days since 1970-01-01, as date32 counts them: an
#: Arrow scalar built from a Python date would make pyarrow import pandas (0.2 s of every processor start).
_FIRST_DAY = (date(1, 1, 1) - date(1970, 1, 1)).days

Derived = tuple[pa.Array, pa.BooleanArray | None]


def _copy(values: pa.Array, column: Column) -> Derived:
    return (values if values.type == column.arrow_type else values.cast(column.arrow_type)), None  # no loss


def _date_of(values: pa.Array, column: Column) -> Derived:
    return values.cast(pa.date32()), None


def _time_of(values: pa.Array, column: Column) -> Derived:
    return values.cast(pa.time64("us")), None


def _parse_date(values: pa.Array, column: Column) -> Derived:
    """Date text to a date as PostgreSQL's `::date` reads it; rows it cannot read are flagged.

    'YYYY-MM-DD' converts in one vectorised cast (the common case); only a batch holding another
    form is read value by value.
    """
    try:
        dates = values.cast(pa.date32())
        earliest = pc.min(dates)
        if not earliest.is_valid or earliest.cast(pa.int32()).as_py() >= _FIRST_DAY:
            return dates, None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    parsed = [None if text is None else _pg_date(text) for text in values.to_pylist()]
    bad = pa.array([text is not None and day is None for text, day in zip(values.to_pylist(), parsed)])
    return pa.array(parsed, pa.date32()), (bad if bad.true_count else None)


def _pg_date(text: str) -> date | None:
    match = _DATE_TEXT.fullmatch(text)
    if not match:
        return None
    year, month, day = (int(g) for g in (match.groups()[:3] if match.group(1) else match.groups()[3:]))
    try:
        return date(year, month, day)
    except ValueError:  # 2022-02-30, month 13, year 0
        return None


DERIVATIONS: dict[str, Callable[[pa.Array, Column], Derived]] = {
    "copy": _copy, "date_of": _date_of, "time_of": _time_of, "parse_date": _parse_date,
}

_OUTPUTS: dict[str, Table] = {t.source: t for t in (*FACTS, *STATE_TABLES, *API_FACTS, *EVENT_FACTS, *DELETE_LOGS)}


def output_table(source: str) -> Table:
    """The lake table a source table's rows become (KeyError for a name that is not a source)."""
    return _OUTPUTS[source]


def transform(output: Table, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[Problem]]:
    """The output's rows for a batch of typed source rows, in the output's exact Arrow schema,
    and the rows a derivation could not give (NULL in the batch; the caller holds them back)."""
    arrays, problems = [], []
    for column in output.data_columns:
        if column.source_table is not None:
            raise ValueError(f"{output.name}.{column.name} draws on another table; the loader derives it")
        source = column.source_column or column.name
        values, bad = DERIVATIONS[column.derive](batch.column(source), column)
        arrays.append(values)
        if bad is not None:
            problems.append(Problem(bad, f"{source} is not a date"))
    return pa.RecordBatch.from_arrays(arrays, schema=output.arrow_schema), problems


def dates_of(output: Table, batch: pa.RecordBatch) -> pa.Array:
    """The distinct dates a batch of fact rows refers to (what `dim_date` must hold for them)."""
    columns = [batch.column(c.name) for c in output.data_columns if c.arrow_type == pa.date32()]
    if output.kind != "fact" or not columns:
        return pa.nulls(0, pa.date32())
    return pc.unique(pc.drop_null(pa.concat_arrays(columns) if len(columns) > 1 else columns[0]))
