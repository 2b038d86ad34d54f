"""A CDC run's CSVs in the lake: written as PostgreSQL's COPY writes them, uploaded create-only."""
from __future__ import annotations

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.errors import RunIdCollision, lake_errors
from totesys_etl.schema.model import Table


def csv_field(value) -> str:
    """One field as PostgreSQL's `COPY ... (FORMAT csv)` writes it in a row of several columns: NULL
    is an unquoted empty field, '' is `""`, and a value holding a comma, quote, CR or LF is quoted
    (`\\.` alone is quoted only in a one-column row, which no declared table has)."""
    if value is None:
        return ""
    if value == "" or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def write_csv(path: str, columns, rows) -> None:
    """The rows (tuples of text or None) under a header line, each field as `csv_field` writes it."""
    with open(path, "w", encoding="utf-8", newline="", buffering=1 << 20) as file:
        file.write(",".join(columns) + "\n")
        for row in rows:
            file.write(",".join(csv_field(v) for v in row) + "\n")


def upload(bucket: str, table: Table, run_id: str, path: str, rows: int) -> dict:
    """Upload one CSV create-only; its manifest entry. A key holding other bytes is another run's."""
    key = lake.table_key(table.name, run_id, "csv")
    with lake_errors(bucket, key):
        if not s3.upload_file_create_only(bucket, key, path) and not s3.holds(bucket, key, path=path):
            raise collision(run_id)
    return {"key": key, "rows": rows, "columns": table.column_names}


def collision(run_id: str) -> RunIdCollision:
    """What a run meets when another ingest wrote its keys first: it stops, writing no manifest."""
    return RunIdCollision(f"another ingest already wrote objects of run {run_id}: stopped without a manifest, "
                          "so the next run reads these changes")
