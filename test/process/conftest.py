"""Helpers for the processor's tests: ingested runs written exactly as the ingestor writes them.

CSVs come from PostgreSQL itself (`COPY … (FORMAT csv, HEADER true)` from tables created with
`schema.ddl.create_table`), so the tests read the real format, quoting and NULLs included.
"""
from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass

import boto3
import pg8000.native
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.config import Settings
from totesys_etl.local.services import admin
from totesys_etl.schema import SOURCE_TABLES, source_table
from totesys_etl.schema.ddl import column_list, create_table

RUN_A = "20221103T142052186000Z"
RUN_B = "20221104T090102500000Z"
RUN_C = "20221105T101010000001Z"


@pytest.fixture(scope="session")
def csv_db(postgres):
    """One database with the eleven source tables, used only to produce CSV bytes by COPY."""
    name = f"processcsv{os.getpid()}"
    admin.create_database(postgres, name)
    conn = pg8000.native.Connection(**parse_url(postgres.url(name)))
    conn.run("SET TIME ZONE 'UTC'")
    for table in SOURCE_TABLES:
        conn.run(create_table(table))
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def copy_csv(csv_db):
    """`copy_csv(table, rows) -> bytes`: the table's rows as PostgreSQL's COPY CSV with a header.

    Each row is a dict of every declared column; values go in as parameters (text, Decimal, ...)
    and PostgreSQL gives them its own types, so the bytes are exactly what the ingestor copies.
    """
    def produce(table_name: str, rows: list[dict]) -> bytes:
        table = source_table(table_name)
        csv_db.run(f"TRUNCATE {table_name}")
        names = table.column_names
        placeholders = ", ".join(f"CAST(:p{i} AS {table.columns[i].type})" for i in range(len(names)))
        for row in rows:
            assert set(row) == set(names), f"give every column of {table_name}"
            csv_db.run(f"INSERT INTO {table_name} ({column_list(names)}) VALUES ({placeholders})",
                       **{f"p{i}": row[n] for i, n in enumerate(names)})
        out = io.BytesIO()
        csv_db.run(f"COPY (SELECT {column_list(names)} FROM {table_name} ORDER BY 1) TO STDOUT "
                   "WITH (FORMAT csv, HEADER true)", stream=out)
        return out.getvalue()
    return produce


@dataclass
class Lake:
    """An ingested bucket and a processed bucket, and the ways tests fill and read them."""

    ingest: str
    processed: str

    @property
    def settings(self) -> Settings:
        return Settings.from_env({"TOTESYS_INGEST_BUCKET": self.ingest,
                                  "TOTESYS_PROCESSED_BUCKET": self.processed})

    def put(self, key: str, body: bytes, bucket: str | None = None) -> None:
        boto3.client("s3").put_object(Bucket=bucket or self.ingest, Key=key, Body=body)

    def write_run(self, run_id: str, files: dict[str, tuple[bytes, int]], extra_entries: dict | None = None,
                  manifest: bytes | None = None, read: str | None = None) -> None:
        """CSVs at their layout keys, then the manifest, as the ingestor does (manifest last)."""
        entries = {}
        for table, (body, rows) in files.items():
            key = lake.table_key(table, run_id, "csv")
            self.put(key, body)
            entries[table] = {"key": key, "rows": rows, "columns": source_table(table).column_names}
        entries.update(extra_entries or {})
        document = {"run_id": run_id, "stage": "ingest", "format": 1, "previous_run_id": None,
                    "snapshot": "1000:1000:", "cutoff": "2022-11-03 14:20:52.186", "files": entries,
                    "rows": {t.name: files.get(t.name, (b"", 0))[1] for t in SOURCE_TABLES}}
        if read is not None:
            document["read"] = read
        body = manifest if manifest is not None else json.dumps(document).encode()
        self.put(lake.manifest_key(run_id), body)

    def keys(self, bucket: str | None = None) -> list[str]:
        pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket or self.processed)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def get(self, key: str, bucket: str | None = None) -> bytes:
        return boto3.client("s3").get_object(Bucket=bucket or self.processed, Key=key)["Body"].read()

    def parquet(self, table: str, run_id: str, bucket: str | None = None) -> pa.Table:
        return pq.read_table(pa.BufferReader(self.get(lake.table_key(table, run_id, "parquet"), bucket)))

    def manifest(self, run_id: str) -> dict:
        return json.loads(self.get(lake.manifest_key(run_id)))

    def snapshot(self, bucket: str | None = None) -> dict[str, bytes]:
        """Every object of a bucket by key (the processed one unless told): what 'same output' compares."""
        return {k: self.get(k, bucket) for k in self.keys(bucket)}


@pytest.fixture
def lake_pair(buckets) -> Lake:
    return Lake(*buckets)


@pytest.fixture
def new_lake(aws):
    """`new_lake()`: a further fresh bucket pair (to compare two ways of processing the same input)."""
    def create() -> Lake:
        s3 = boto3.client("s3")
        names = (f"ingested-{uuid.uuid4().hex[:12]}", f"processed-{uuid.uuid4().hex[:12]}")
        for name in names:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": os.environ[
                "AWS_DEFAULT_REGION"]})
        return Lake(*names)
    return create
