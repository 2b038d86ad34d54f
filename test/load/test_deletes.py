"""Deletes a run records (load/deletes.py), against real PostgreSQL and moto."""
from __future__ import annotations

import json
from datetime import date

from totesys_etl import lake
from totesys_etl.load.run import load

TODAY = date(2024, 11, 14)


def test_a_complete_table_whose_file_is_quarantined_records_no_deletes(settings, processed_lake, totesys, kit,
                                                                       warehouse_url, run_sql, log_lines):
    """A run that holds a table whole (a CDC snapshot) records as deleted every stored id its file
    lacks; when that file is quarantined the run holds none of its rows, so it can tell nothing."""
    first, second = kit.run_id(1), kit.run_id(2)
    processed_lake.write_run(first, {t: list(rows.values()) for t, rows in totesys.rows.items()})
    load(settings, [first], today=TODAY)
    stored = run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0]
    manifest = processed_lake.write_run(second, {"staff": [totesys.change("staff", 1, last_name="Kept")]},
                                        extra_files={"fact_sales_order": b"PAR1 not parquet at all"})
    processed_lake.s3.put_object(Bucket=processed_lake.processed, Key=lake.manifest_key(second),
                                 Body=json.dumps({**manifest, "complete": ["fact_sales_order"]}))
    result = load(settings, [second], today=TODAY)
    assert result["runs"][0]["quarantined"] == 1
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_deleted_row") == [[0]]
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[stored]] and stored
    assert any("not checked for deletes" in line["message"] for line in log_lines)
