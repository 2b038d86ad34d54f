"""A source column whose type changed (contract §2 "Schema changes", processor side), on moto's S3.

"A type change whose values still fit goes on; a row that no longer fits is held back alone." Each
case makes the source table in PostgreSQL with the column's new type, fills it, and takes the CSV
from PostgreSQL's own COPY, as the ingestor would; the processor reads it against the declaration.
"""
from __future__ import annotations

import io
import json
from datetime import datetime

import pytest

from totesys_etl.process import run, transform
from totesys_etl.schema import source_table
from totesys_etl.schema.ddl import column_list, create_table

RUN = "20221103T142052186000Z"
STAMP = "2022-11-03 14:20:52.186"


def changed_csv(csv_db, table_name: str, column: str, new_type: str, values: list[str]) -> bytes:
    """COPY of `table_name` with `column` altered to `new_type`, one row per value (ids 1, 2, ...)."""
    table = source_table(table_name)
    csv_db.run("DROP SCHEMA IF EXISTS changed CASCADE")
    csv_db.run("CREATE SCHEMA changed")
    csv_db.run("SET search_path TO changed")
    try:
        csv_db.run(create_table(table))
        csv_db.run(f"ALTER TABLE {table_name} ALTER COLUMN {column} TYPE {new_type} USING {column}::{new_type}")
        key = table.key[0]
        for i, value in enumerate(values, start=1):
            csv_db.run(f"INSERT INTO {table_name} SELECT * FROM json_populate_record(NULL::{table_name}, "
                       f"CAST(:row AS json))", row=_row_json(table, {key: str(i), column: value}))
        out = io.BytesIO()
        csv_db.run(f"COPY (SELECT {column_list(table.column_names)} FROM {table_name} ORDER BY 1) TO STDOUT "
                   "WITH (FORMAT csv, HEADER true)", stream=out)
        return out.getvalue()
    finally:
        csv_db.run("SET search_path TO public")
        csv_db.run("DROP SCHEMA changed CASCADE")


_SAMPLE = {"int": "1", "numeric": "12.5", "numeric(10,2)": "2.50", "boolean": "true", "timestamp": STAMP,
           "varchar": "x", "varchar(3)": "GBP"}


def _row_json(table, values: dict[str, str]) -> str:
    row = {}
    for column in table.columns:
        text = _SAMPLE[column.type]
        if column.type == "varchar" and "date" in column.name:
            text = "2022-11-10"
        row[column.name] = text
    return json.dumps({**row, **values})


CASES = [
    # (table, column, new type, values that still fit, a value that no longer does, its reason)
    ("sales_order", "units_sold", "bigint", ["5", "2147483647"], "2147483648", "units_sold does not read as int"),
    ("sales_order", "unit_price", "numeric", ["2.5", "99999999.99"], "2.555",
     "unit_price does not read as numeric(10,2)"),
    ("sales_order", "unit_price", "numeric(14,2)", ["2.50", "-99999999.99"], "100000000.00",
     "unit_price does not read as numeric(10,2)"),
    ("currency", "currency_code", "varchar(10)", ["GBP", "€€€"], "GBPX", "currency_code is longer than varchar(3)"),
    ("currency", "currency_code", "text", ["USD", ""], "EURO", "currency_code is longer than varchar(3)"),
    ("sales_order", "agreed_delivery_date", "date", ["2022-11-10", "2024-02-29"], None, None),
    ("sales_order", "units_sold", "numeric", ["7", "-2147483648"], "7.5", "units_sold does not read as int"),
    ("payment", "company_ac_number", "bigint", ["12345678"], "99999999999", "company_ac_number does not read as int"),
    ("address", "city", "text", ["Leeds", "Zoë 😀"], None, None),
    ("sales_order", "last_updated", "timestamptz", [STAMP, "2024-03-31 01:30:00"], None, None),
]


@pytest.mark.parametrize("table, column, new_type, fitting, misfit, reason", CASES,
                         ids=[f"{c[1]}-{c[2]}" for c in CASES])
def test_a_type_change_goes_on_and_a_row_that_no_longer_fits_is_held_back_alone(
        lake_pair, csv_db, table, column, new_type, fitting, misfit, reason):
    values = fitting + ([misfit] if misfit is not None else [])
    body = changed_csv(csv_db, table, column, new_type, values)
    lake_pair.write_run(RUN, {table: (body, len(values))})

    result = run.process_run(lake_pair.settings, RUN)

    output = transform.output_table(table)
    key = source_table(table).key[0]
    assert lake_pair.parquet(output.name, RUN).column(key).to_pylist() == list(range(1, len(fitting) + 1))
    assert result.quarantined == (misfit is not None)
    if misfit is not None:
        [entry] = lake_pair.manifest(RUN)["quarantined"]
        assert entry["rows"] == 1 and list(entry["reasons"]) == [reason]


def test_a_timestamp_that_became_timestamptz_keeps_the_server_zone_wall_clock(lake_pair, csv_db):
    """COPY writes a timestamptz in the session's zone with its offset; the declaration is the
    server's wall clock, which is that text without the offset (the ingestor's session zone)."""
    body = changed_csv(csv_db, "currency", "last_updated", "timestamptz", [STAMP])
    assert b"+00" in body
    lake_pair.write_run(RUN, {"currency": (body, 1)})
    run.process_run(lake_pair.settings, RUN)
    [row] = lake_pair.parquet("etl_src_currency", RUN).to_pylist()
    assert row["last_updated"] == datetime(2022, 11, 3, 14, 20, 52, 186000)
