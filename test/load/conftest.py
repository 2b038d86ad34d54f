"""Test helpers for the loader: a small totesys source held in Python, and a processed lake.

`TotesysState` is the source: rows per table, each new version stamped with a later
`last_updated`. `ProcessedLake.write_run` turns the versions a run saw into exactly what the
processor writes (Parquet from the declarations' arrow_schema, plus the processed manifest), so
these tests need no processor. `expected_dimension` derives a dimension in Python, a second,
independent implementation of the declaration's joins to hold the loader's SQL against.
"""
from __future__ import annotations

import io
import json
import logging
import os
import secrets
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import boto3
import pg8000.native
import pyarrow as pa
import pyarrow.parquet as pq
import pycountry
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import identifier, parse_url
from totesys_etl.calendar import date_rows
from totesys_etl.config import Settings
from totesys_etl.local.services import admin
from totesys_etl.logs import configure
from totesys_etl.schema import DIM_DATE, FACTS, STAR_TABLES, STATE_TABLES, source_table, star_table
from totesys_etl.schema.warehouse import CURRENCY_NAMES, bookkeeping_columns

T0 = datetime(2024, 11, 14, 9, 30, 0, 123000)
TRICKY = 'O\'Brien, "the Quoted"\nsecond line; DROP TABLE x; -- Zoë 😀'


class TotesysState:
    """The source's current rows; `change` makes a new version (a later last_updated)."""

    def __init__(self):
        self.rows: dict[str, dict[int, dict]] = {t.name: {} for t in _SOURCE_NAMES}
        self.clock = T0

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1, milliseconds=7)
        return self.clock

    def add(self, table: str, id_: int, **values) -> dict:
        now = self.tick()
        row = {f"{table}_id": id_, **values, "created_at": now, "last_updated": now}
        self.rows[table][id_] = row
        return row

    def change(self, table: str, id_: int, **values) -> dict:
        row = {**self.rows[table][id_], **values, "last_updated": self.tick()}
        self.rows[table][id_] = row
        return row


_SOURCE_NAMES = [source_table(n) for n in ("address", "counterparty", "currency", "department", "design", "staff",
                                           "payment_type", "sales_order", "purchase_order", "transaction",
                                           "payment")]


def base_source() -> TotesysState:
    """A small source with the awkward values contract §2 promises: quotes, newlines, emoji, NULL vs ''."""
    s = TotesysState()
    s.add("address", 1, address_line_1="1 High St", address_line_2=None, district=None, city="Leeds",
          postal_code="LS1 1AA", country="UK", phone="0113 000")
    s.add("address", 2, address_line_1=TRICKY, address_line_2="", district="", city="Köln",
          postal_code="50667", country="Germany", phone="+49 221")
    s.add("address", 3, address_line_1="3 Rue", address_line_2="Bât. B", district="Île", city="Paris",
          postal_code="75001", country="France", phone="+33 1")
    s.add("department", 1, department_name="Sales", location="Leeds", manager="Ann")
    s.add("department", 2, department_name="Purchasing", location=None, manager=None)
    s.add("staff", 1, first_name="Zoë", last_name="O'Neil", department_id=1, email_address="z@t.com")
    s.add("staff", 2, first_name="Bob", last_name="", department_id=2, email_address="b@t.com")
    s.add("counterparty", 1, counterparty_legal_name="Acme, Ltd", legal_address_id=1,
          commercial_contact=None, delivery_contact="")
    s.add("counterparty", 2, counterparty_legal_name=TRICKY, legal_address_id=2,
          commercial_contact="Carl", delivery_contact=None)
    for i, code in enumerate(("GBP", "USD", "EUR", "CHF", "XQQ"), start=1):
        s.add("currency", i, currency_code=code)
    s.add("design", 1, design_name="Wooden", file_location="/d", file_name="wooden-20220717.json")
    s.add("design", 2, design_name=TRICKY, file_location="", file_name="x.json")
    s.add("payment_type", 1, payment_type_name="SALES_RECEIPT")
    s.add("payment_type", 2, payment_type_name="PURCHASE_PAYMENT")
    s.add("sales_order", 1, design_id=1, staff_id=1, counterparty_id=1, units_sold=100,
          unit_price=Decimal("2.50"), currency_id=1, agreed_delivery_date="2024-11-20",
          agreed_payment_date="2024-11-21", agreed_delivery_location_id=3)
    s.add("sales_order", 2, design_id=2, staff_id=2, counterparty_id=2, units_sold=7,
          unit_price=Decimal("99999999.99"), currency_id=5, agreed_delivery_date="2031-01-01",
          agreed_payment_date="2019-02-28", agreed_delivery_location_id=2)
    s.add("purchase_order", 1, staff_id=2, counterparty_id=1, item_code="AB-1", item_quantity=3,
          item_unit_price=Decimal("1234567890123456789.5"), currency_id=2, agreed_delivery_date="2024-12-01",
          agreed_payment_date="2024-12-02", agreed_delivery_location_id=1)
    s.add("transaction", 1, transaction_type="SALE", sales_order_id=1, purchase_order_id=None)
    s.add("transaction", 2, transaction_type="PURCHASE", sales_order_id=None, purchase_order_id=1)
    s.add("payment", 1, transaction_id=1, counterparty_id=1, payment_amount=Decimal("0.00000001"),
          currency_id=1, payment_type_id=1, paid=False, payment_date="2024-11-22", company_ac_number=1,
          counterparty_ac_number=2)
    s.add("payment", 2, transaction_id=2, counterparty_id=2, payment_amount=Decimal("-12345678901.12345678"),
          currency_id=3, payment_type_id=2, paid=True, payment_date="2023-01-01", company_ac_number=3,
          counterparty_ac_number=4)
    return s


def _derive(column, row: dict):
    value = row[column.source_column]
    if column.derive == "date_of":
        return value.date()
    if column.derive == "time_of":
        return value.time()
    if column.derive == "parse_date":
        return date.fromisoformat(value)
    return value


def fact_row(fact, row: dict) -> dict:
    return {c.name: _derive(c, row) for c in fact.data_columns}


def run_tables(versions: dict[str, list[dict]]) -> dict[str, pa.Table]:
    """What the processor writes for a run that saw these source versions (table -> rows)."""
    out = {}
    for state in STATE_TABLES:
        rows = versions.get(state.source) or []
        if rows:
            out[state.name] = pa.Table.from_pylist(rows, schema=state.arrow_schema)
    dates = set()
    for fact in FACTS:
        rows = [fact_row(fact, r) for r in versions.get(fact.source) or []]
        if rows:
            out[fact.name] = pa.Table.from_pylist(rows, schema=fact.arrow_schema)
            dates |= {r[c.name] for r in rows for c in fact.data_columns if c.type == "date"}
    if dates:
        out[DIM_DATE.name] = date_rows(pa.array(sorted(dates), pa.date32()))
    return out


class ProcessedLake:
    """Writes processed runs (Parquet + manifest) and ingested manifests into moto's S3."""

    def __init__(self, ingested: str, processed: str):
        self.ingested, self.processed = ingested, processed
        self.s3 = boto3.client("s3")

    def write_run(self, run_id: str, versions: dict[str, list[dict]], ingested: bool = True,
                  extra_files: dict[str, bytes] | None = None, raw_entries: dict | None = None) -> dict:
        files = {}
        for name, table in run_tables(versions).items():
            key = lake.table_key(name, run_id, "parquet")
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            self.s3.put_object(Bucket=self.processed, Key=key, Body=buffer.getvalue())
            files[name] = {"key": key, "rows": table.num_rows}
        for name, body in (extra_files or {}).items():
            key = lake.table_key(name, run_id, "parquet")
            self.s3.put_object(Bucket=self.processed, Key=key, Body=body)
            files[name] = {"key": key, "rows": 1}
        files.update(raw_entries or {})
        manifest = {"run_id": run_id, "stage": "process", "format": 1, "files": files, "quarantined": []}
        if ingested:
            self.write_ingested(run_id)
        self.s3.put_object(Bucket=self.processed, Key=lake.manifest_key(run_id), Body=json.dumps(manifest))
        return manifest

    def write_ingested(self, run_id: str) -> None:
        self.s3.put_object(Bucket=self.ingested, Key=lake.manifest_key(run_id),
                           Body=json.dumps({"run_id": run_id, "stage": "ingest", "files": {}, "rows": {}}))

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.processed, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def run_id(n: int) -> str:
    return f"20241114T1000{n:02d}000000Z"


def expected_dimension(dimension, state: TotesysState) -> list[tuple]:
    """A dimension's rows from the source's current state, derived in Python from the declaration."""
    names = {CURRENCY_NAMES.name: {c.alpha_3: {"currency_name": c.name} for c in pycountry.currencies}}
    out = []
    for row in state.rows[dimension.source].values():
        joined = {}
        for join in dimension.joins:
            table = names[join.table] if join.table in names else {
                r[join.remote]: r for r in state.rows[join.table].values()}
            joined[join.table] = table.get(row[join.local])
        if any(joined[j.table] is None for j in dimension.joins if j.required):
            continue
        values = []
        for column in dimension.data_columns:
            origin = row if column.source_table is None else (joined[column.source_table] or {})
            values.append(origin.get(column.source_column))
        out.append(tuple(values))
    return sorted(out, key=lambda r: r[0])


def table_rows(url: str, table, with_system: bool = False) -> list[tuple]:
    """Every row of a warehouse table in key order (data columns; xmin, surrogate and etl_ columns too if asked)."""
    names = [c.name for c in ((*table.columns, *bookkeeping_columns(table)) if with_system else table.data_columns)]
    cols = ", ".join(identifier(n) for n in names)
    if with_system:
        cols = "xmin::text, " + cols
    order = ", ".join(identifier(n) for n in (table.version_key or table.key))
    conn = pg8000.native.Connection(**parse_url(url))
    try:
        return [tuple(r) for r in conn.run(f"SELECT {cols} FROM {identifier(table.name)} ORDER BY {order}")]
    finally:
        conn.close()


def star_snapshot(url: str, with_system: bool = True) -> dict[str, list[tuple]]:
    return {t.name: table_rows(url, t, with_system) for t in STAR_TABLES}


def commit_order_runs(totesys: TotesysState, processed_lake: ProcessedLake) -> dict:
    """Issue 21 item 1 as the lake shows it. Run 1 reads the whole source. T1 begins (its `now()` is
    t1), T2 begins at t2, changes address 1, sales order 1 and payment 1 and commits; run 2 reads
    T2's versions. T1 then changes the same rows and commits (stamp t1, older; payment 1 got the
    same stamp t2 from a third commit) and run 3 reads those. The source now holds T1's values."""
    base = {table: list(rows.values()) for table, rows in totesys.rows.items()}
    t1 = totesys.tick()
    t2 = totesys.tick()
    rows = {table: totesys.rows[table][1] for table in ("address", "sales_order", "payment")}
    first = {"address": [{**rows["address"], "city": "T2 city", "last_updated": t2}],
             "sales_order": [{**rows["sales_order"], "units_sold": 222, "last_updated": t2}],
             "payment": [{**rows["payment"], "payment_amount": Decimal("2.22"), "last_updated": t2}]}
    totesys.rows["address"][1] = {**rows["address"], "city": "T1 city", "last_updated": t1}
    totesys.rows["sales_order"][1] = {**rows["sales_order"], "units_sold": 111, "last_updated": t1}
    totesys.rows["payment"][1] = {**rows["payment"], "payment_amount": Decimal("1.11"), "last_updated": t2}
    second = {table: [totesys.rows[table][1]] for table in first}
    processed_lake.write_run(run_id(1), base)
    processed_lake.write_run(run_id(2), first)
    processed_lake.write_run(run_id(3), second)
    return {"t1": t1, "t2": t2}


@pytest.fixture
def migrated(warehouse_url):
    """A connection to a warehouse the loader's migrations have made, for statement-level tests."""
    from totesys_etl.load.migrations import migrate

    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    migrate(conn)
    yield conn
    conn.close()


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (pytest's importlib mode cannot import a conftest)."""
    return SimpleNamespace(run_id=run_id, table_rows=table_rows, star_snapshot=star_snapshot,
                           expected_dimension=expected_dimension, fact_row=fact_row, run_tables=run_tables,
                           base_source=base_source, TRICKY=TRICKY, star=star_table,
                           commit_order_runs=commit_order_runs)


@pytest.fixture
def totesys() -> TotesysState:
    return base_source()


@pytest.fixture
def processed_lake(buckets) -> ProcessedLake:
    return ProcessedLake(*buckets)


@pytest.fixture
def settings(warehouse_url, buckets) -> Settings:
    return Settings.from_env({"TOTESYS_WAREHOUSE_URL": warehouse_url, "TOTESYS_INGEST_BUCKET": buckets[0],
                              "TOTESYS_PROCESSED_BUCKET": buckets[1]})


@pytest.fixture
def fresh_warehouse(postgres, buckets):
    """Settings for another, empty warehouse on the same lake (a clean run to compare with)."""
    def make() -> Settings:
        name = f"dw_{secrets.token_hex(4)}"
        admin.create_database(postgres, name)
        return Settings.from_env({"TOTESYS_WAREHOUSE_URL": postgres.url(name), "TOTESYS_INGEST_BUCKET": buckets[0],
                                  "TOTESYS_PROCESSED_BUCKET": buckets[1]})
    return make


@pytest.fixture
def load_env(warehouse_url, buckets, monkeypatch) -> dict:
    """The contract §5 variables the load handler reads."""
    monkeypatch.setenv("TOTESYS_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    return {k: v for k, v in os.environ.items() if k.startswith(("TOTESYS_", "AWS_"))}


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"level": record.levelname, "message": record.getMessage(),
                           **getattr(record, "fields", {})})


@pytest.fixture
def log_lines():
    """The package's structured log lines during the test, as dicts (level, message, fields)."""
    configure()
    collector = _Collector()
    logger = logging.getLogger("totesys_etl")
    logger.addHandler(collector)
    yield collector.lines
    logger.removeHandler(collector)
