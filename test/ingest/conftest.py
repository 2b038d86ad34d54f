"""Ingest fixtures: the eleven source tables in the test's source database, and captured logs."""
from __future__ import annotations

import logging

import boto3
import pg8000.native
import pytest

from totesys_etl import manifest as manifests
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.logs import StageLog
from totesys_etl.schema import SOURCE_TABLES
from totesys_etl.schema.ddl import column_list, create_table

ROWS_PER_TABLE = 3  # test_run.py relies on this number


def _value(column) -> str:
    """A SQL expression of generate_series' `g` that fits the column's declared type."""
    if column.name in ("created_at", "last_updated"):
        return "LOCALTIMESTAMP"
    if column.type in ("int", "serial"):
        return "g"
    if column.type == "boolean":
        return "g % 2 = 0"
    if column.type.startswith("numeric"):
        return "g * 1.25"
    if column.type == "varchar(3)":
        return "'C' || g"
    return f"'{column.name} ' || g"


class Totesys:
    """The source database seen by its admin role: the test's way to change the source."""

    def __init__(self, admin_url: str):
        self.conn = pg8000.native.Connection(**parse_url(admin_url))

    def run(self, sql: str, **params):
        return self.conn.run(sql, **params)

    def insert_generated(self, table, first: int, count: int) -> None:
        values = ", ".join(_value(c) for c in table.columns)
        self.run(f"INSERT INTO {pg8000.native.identifier(table.name)} ({column_list(table.column_names)}) "
                 f"SELECT {values} FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS g",
                 first=first, last=first + count - 1)


@pytest.fixture(scope="session")
def generated_value():
    """`_value`, for the conftests of the folders below (pytest's importlib mode shares no module)."""
    return _value


@pytest.fixture
def totesys(source, run_sql):
    """The eleven tables created from their declarations, ROWS_PER_TABLE rows each, by the admin."""
    db = Totesys(source.admin_url)
    for table in SOURCE_TABLES:
        db.run(create_table(table))
        db.insert_generated(table, 1, ROWS_PER_TABLE)
    # The fixture's default privileges let the read-only role read tables created afterwards.
    assert run_sql(source.reader_url, "SELECT count(*) FROM payment") == [[ROWS_PER_TABLE]]
    yield db
    db.conn.close()


@pytest.fixture
def logs():
    """Every line the package logs during the test, as dicts (the JSON lines' fields)."""
    StageLog("test")  # configures the package logger once
    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append({"level": record.levelname, "message": record.getMessage(),
                          **getattr(record, "fields", {})})

    handler = Collect()
    logger = logging.getLogger("totesys_etl")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


class Lake:
    """The ingested bucket, read back."""

    def __init__(self, bucket: str):
        self.bucket = bucket
        self.s3 = boto3.client("s3")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def table_keys(self) -> list[str]:
        return [k for k in self.keys() if not k.startswith(("_runs/", "_state/"))]

    def body(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def manifest(self, run_id: str) -> dict:
        return manifests.read(self.bucket, run_id)


@pytest.fixture
def ingested(buckets) -> Lake:
    return Lake(buckets[0])
