"""Source rows to lake rows: pure functions from Arrow to Arrow, driven by the declarations.

Each source table feeds exactly one output: a fact (`fact.source`) or the loader's state table
(`etl_src_<table>`). Every output column is computed from its declaration (`Column.source`,
`Column.derive`), so adding a column to `schema/warehouse.py` needs no change here.
"""
from __future__ import annotations

from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from totesys_etl.errors import InvalidInput
from totesys_etl.schema import FACTS, STATE_TABLES, Column, Table


def _copy(values: pa.Array, column: Column) -> pa.Array:
    return values if values.type == column.arrow_type else values.cast(column.arrow_type)  # safe: no loss


def _date_of(values: pa.Array, column: Column) -> pa.Array:
    return values.cast(pa.date32())


def _time_of(values: pa.Array, column: Column) -> pa.Array:
    return values.cast(pa.time64("us"))


def _parse_date(values: pa.Array, column: Column) -> pa.Array:
    """'YYYY-MM-DD' text to a date; anything else (another format, 2022-02-30) is invalid input."""
    try:
        return values.cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InvalidInput(f"{column.source} holds a value that is not a YYYY-MM-DD date") from None


DERIVATIONS: dict[str, Callable[[pa.Array, Column], pa.Array]] = {
    "copy": _copy, "date_of": _date_of, "time_of": _time_of, "parse_date": _parse_date,
}

_OUTPUTS: dict[str, Table] = {t.source: t for t in (*FACTS, *STATE_TABLES)}


def output_table(source: str) -> Table:
    """The lake table a source table's rows become (KeyError for a name that is not a source)."""
    return _OUTPUTS[source]


def transform(output: Table, batch: pa.RecordBatch) -> pa.RecordBatch:
    """The output's rows for a batch of typed source rows, in the output's exact Arrow schema."""
    arrays = []
    for column in output.data_columns:
        if column.source_table is not None:
            raise ValueError(f"{output.name}.{column.name} draws on another table; the loader derives it")
        arrays.append(DERIVATIONS[column.derive](batch.column(column.source_column or column.name), column))
    return pa.RecordBatch.from_arrays(arrays, schema=output.arrow_schema)


def dates_of(output: Table, batch: pa.RecordBatch) -> pa.Array:
    """The distinct dates a batch of fact rows refers to (what `dim_date` must hold for them)."""
    columns = [batch.column(c.name) for c in output.data_columns if c.arrow_type == pa.date32()]
    if output.kind != "fact" or not columns:
        return pa.nulls(0, pa.date32())
    return pc.unique(pc.drop_null(pa.concat_arrays(columns) if len(columns) > 1 else columns[0]))
