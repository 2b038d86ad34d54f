"""An oracle that shares no code with the pipeline (issue 26): what the star must hold, from the source.

Comparing a faulted warehouse with a clean run of the same pipeline cannot see a loss both share,
and `reconcile` derives its expectations from the same declarations as the loader's SQL. So this
module writes every expected row by hand, from the data dictionary (readme_files/data-dictionary.md)
and contract §3, with its own SQL, its own URL parsing, its own CSV reading and pycountry called
directly. It imports nothing from `totesys_etl`.

`check()` returns the problems it finds (an empty list means the warehouse is right):
- each dimension equals the source's current state, joins included (staff → department,
  counterparty → legal address, currency → its ISO 4217 name);
- each fact's current version (id, last_updated) is in the fact table once, with the source's
  values; no fact row names an id the source lacks;
- history: every version that an ingested CSV named by a `_runs/*.json` manifest ever carried is
  in its fact table exactly once, and the fact table holds no version no run carried;
- every date a fact refers to is in `dim_date`, whose derived columns are right, and every
  other key a fact holds resolves to its dimension.

The current version is found by its (id, last_updated_date, last_updated_time), never by "the
newest row", so the check does not depend on how the loader orders versions.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import unquote, urlsplit

import boto3
import pg8000.native
import pycountry

DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December"]

#: dimension -> (SQL over the source, SQL over the warehouse); the key is the first column of both.
DIMENSIONS = {
    "dim_staff": (
        "SELECT s.staff_id, s.first_name, s.last_name, d.department_name, d.location, s.email_address "
        "FROM staff s JOIN department d ON d.department_id = s.department_id",
        "SELECT staff_id, first_name, last_name, department_name, location, email_address FROM dim_staff"),
    "dim_location": (
        "SELECT address_id, address_line_1, address_line_2, district, city, postal_code, country, phone "
        "FROM address",
        "SELECT location_id, address_line_1, address_line_2, district, city, postal_code, country, phone "
        "FROM dim_location"),
    "dim_design": (
        "SELECT design_id, design_name, file_location, file_name FROM design",
        "SELECT design_id, design_name, file_location, file_name FROM dim_design"),
    "dim_counterparty": (
        "SELECT c.counterparty_id, c.counterparty_legal_name, a.address_line_1, a.address_line_2, a.district, "
        "a.city, a.postal_code, a.country, a.phone "
        "FROM counterparty c JOIN address a ON a.address_id = c.legal_address_id",
        "SELECT counterparty_id, counterparty_legal_name, counterparty_legal_address_line_1, "
        "counterparty_legal_address_line_2, counterparty_legal_district, counterparty_legal_city, "
        "counterparty_legal_postal_code, counterparty_legal_country, counterparty_legal_phone_number "
        "FROM dim_counterparty"),
    "dim_payment_type": (
        "SELECT payment_type_id, payment_type_name FROM payment_type",
        "SELECT payment_type_id, payment_type_name FROM dim_payment_type"),
    "dim_transaction": (
        "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id FROM transaction",
        "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id FROM dim_transaction"),
    "dim_currency": (
        "SELECT currency_id, currency_code FROM currency",  # the name is added from pycountry below
        "SELECT currency_id, currency_code, currency_name FROM dim_currency"),
}


@dataclass(frozen=True)
class Fact:
    """One fact table: its source, the SQL on both sides (same column order), and its keys."""

    table: str
    source: str
    source_sql: str
    warehouse_sql: str
    #: column position -> the dimension whose key it must be ("dim_date" for dates)
    refers: dict = field(default_factory=dict)


_VERSION = ("CAST(created_at AS date), CAST(created_at AS time), CAST(last_updated AS date), "
            "CAST(last_updated AS time)")
_W_VERSION = "created_date, created_time, last_updated_date, last_updated_time"
_DATES = {1: "dim_date", 3: "dim_date"}

FACTS = [
    Fact("fact_sales_order", "sales_order",
         f"SELECT sales_order_id, {_VERSION}, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
         "design_id, CAST(agreed_payment_date AS date), CAST(agreed_delivery_date AS date), "
         "agreed_delivery_location_id FROM sales_order",
         f"SELECT sales_order_id, {_W_VERSION}, sales_staff_id, counterparty_id, units_sold, unit_price, "
         "currency_id, design_id, agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id "
         "FROM fact_sales_order",
         {**_DATES, 5: "dim_staff", 6: "dim_counterparty", 9: "dim_currency", 10: "dim_design", 11: "dim_date",
          12: "dim_date", 13: "dim_location"}),
    Fact("fact_purchase_order", "purchase_order",
         f"SELECT purchase_order_id, {_VERSION}, staff_id, counterparty_id, item_code, item_quantity, "
         "item_unit_price, currency_id, CAST(agreed_delivery_date AS date), CAST(agreed_payment_date AS date), "
         "agreed_delivery_location_id FROM purchase_order",
         f"SELECT purchase_order_id, {_W_VERSION}, staff_id, counterparty_id, item_code, item_quantity, "
         "item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id "
         "FROM fact_purchase_order",
         {**_DATES, 5: "dim_staff", 6: "dim_counterparty", 10: "dim_currency", 11: "dim_date", 12: "dim_date",
          13: "dim_location"}),
    Fact("fact_payment", "payment",
         f"SELECT payment_id, {_VERSION}, transaction_id, counterparty_id, payment_amount, currency_id, "
         "payment_type_id, paid, CAST(payment_date AS date) FROM payment",
         f"SELECT payment_id, {_W_VERSION}, transaction_id, counterparty_id, payment_amount, currency_id, "
         "payment_type_id, paid, payment_date FROM fact_payment",
         {**_DATES, 5: "dim_transaction", 6: "dim_counterparty", 8: "dim_currency", 9: "dim_payment_type",
          11: "dim_date"}),
]

_MANIFEST = re.compile(r"_runs/(\d{8}T\d{12}Z)\.json")
#: contract §4: an object over 16 MiB at a manifest's key is a corrupt manifest, judged by its size alone.
MANIFEST_MAX_BYTES = 16 << 20


def connect(url: str) -> pg8000.native.Connection:
    """A connection from `postgresql://user:password@host:port/dbname` (parsed here, not by the pipeline)."""
    parts = urlsplit(url)
    return pg8000.native.Connection(user=unquote(parts.username), password=unquote(parts.password or ""),
                                    host=parts.hostname, port=parts.port or 5432,
                                    database=parts.path.lstrip("/"))


def query(database, statement: str) -> list[tuple]:
    """Rows of `statement` on a database URL, or on an open connection (e.g. inside a test's
    transaction that damages the warehouse and is rolled back)."""
    if not isinstance(database, str):
        return [tuple(row) for row in database.run(statement)]
    conn = connect(database)
    try:
        return [tuple(row) for row in conn.run(statement)]
    finally:
        conn.close()


def currency_name(code: str) -> str | None:
    """contract §3: the English ISO 4217 name as pycountry gives it; None for a code it does not know."""
    currency = pycountry.currencies.get(alpha_3=code)
    return currency.name if currency else None


def expected_dimensions(source) -> dict[str, dict]:
    """Each dimension as {key: row}, straight from the source's current state (a URL or connection)."""
    out = {}
    for name, (source_sql, _) in DIMENSIONS.items():
        rows = query(source, source_sql)
        if name == "dim_currency":
            rows = [(*row, currency_name(row[1])) for row in rows]
        out[name] = {row[0]: row for row in rows}
    return out


def date_row(day: date) -> tuple:
    """dim_date's row for a day (contract §3: ISO weekday, English names, quarter 1-4)."""
    return (day, day.year, day.month, day.day, day.isoweekday(), DAY_NAMES[day.weekday()],
            MONTH_NAMES[day.month - 1], (day.month - 1) // 3 + 1)


def lake_versions(bucket: str, skip_keys=()) -> dict[str, set]:
    """source table -> every (id, last_updated date, time) an ingested CSV named by a manifest carried.

    Only files at the key contract §4's layout gives the table in that run are read (a hostile manifest
    may name anything); corrupt manifests (nested too deep to decode, or over the 16 MiB a manifest
    may be, included), missing files and rows without a readable id and stamp are passed over, as the
    pipeline must pass them (a test names their versions as held back).
    """
    s3 = boto3.client("s3")
    wanted = {f.source for f in FACTS}
    versions: dict[str, set] = defaultdict(set)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="_runs/"):
        for obj in page.get("Contents", []):
            match = _MANIFEST.fullmatch(obj["Key"])
            if not match:
                continue
            run_id = match.group(1)
            if obj["Size"] > MANIFEST_MAX_BYTES:
                continue
            try:
                files = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())["files"]
                entries = [(t, part["key"]) for t, e in files.items() if t in wanted  # a table in parts: each
                           for part in (e["parts"] if "parts" in e else [e])]
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                continue
            for table, key in entries:
                layout = re.escape(f"{table}/year={run_id[:4]}/month={run_id[4:6]}/day={run_id[6:8]}/"
                                   f"{table}_{run_id}.") + r"(part\d{5}\.)?csv"
                if not re.fullmatch(layout, key) or key in skip_keys:
                    continue
                try:
                    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
                except s3.exceptions.NoSuchKey:
                    continue
                for row in csv.DictReader(io.StringIO(body, newline="")):
                    try:
                        moment = datetime.fromisoformat(row["last_updated"])
                        version = (int(row[f"{table}_id"]), moment.date(), moment.time())
                    except (TypeError, ValueError):  # a damaged row: the test names it as held back
                        continue
                    versions[table].add(version)
    return versions


def _version(row: tuple) -> tuple:
    return row[0], row[3], row[4]


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    rows_checked: int = 0

    def problem(self, table: str, what: str, examples) -> None:
        examples = list(examples)
        if examples:
            self.problems.append(f"{table}: {len(examples)} {what}, e.g. {examples[:2]}")


def check(source_url: str, warehouse_url, ingest_bucket: str | None = None,
          held_back: dict[str, set] | None = None, skip_keys=(), history: dict | None = None) -> Verdict:
    """Every difference between the warehouse and what the source (and the lake's history) says.

    `warehouse_url` may be an open connection instead of a URL. `held_back`: fact table -> versions
    (id, date, time) quarantined on purpose, which may be missing; `skip_keys`: ingested CSVs
    damaged on purpose, not read for history; `history`: `lake_versions()` already read.
    """
    opened = [connect(url) for url in (source_url, warehouse_url) if isinstance(url, str)]
    try:
        source = opened[0]
        warehouse = warehouse_url if not isinstance(warehouse_url, str) else opened[1]
        return _check(source, warehouse, ingest_bucket, held_back or {}, skip_keys, history)
    finally:
        for conn in opened:
            conn.close()


def _check(source, warehouse, ingest_bucket, held_back, skip_keys, history) -> Verdict:
    verdict = Verdict()
    dimensions = expected_dimensions(source)
    present: dict[str, set] = {}
    for name, want in dimensions.items():
        got_rows = query(warehouse, DIMENSIONS[name][1])
        got = {row[0]: row for row in got_rows}
        present[name] = set(got)
        verdict.rows_checked += len(got_rows)
        verdict.problem(name, "keys twice", [k for k, n in Counter(r[0] for r in got_rows).items() if n > 1])
        verdict.problem(name, "missing", sorted(set(want) - set(got)))
        verdict.problem(name, "not in the source", sorted(set(got) - set(want)))
        verdict.problem(name, "different", [(want[k], got[k]) for k in sorted(set(want) & set(got))
                                            if want[k] != got[k]])

    if history is None and ingest_bucket:
        history = lake_versions(ingest_bucket, skip_keys)
    referenced_dates = set()
    for fact in FACTS:
        allowed = held_back.get(fact.table, set())
        source_rows = query(source, fact.source_sql)
        warehouse_rows = query(warehouse, fact.warehouse_sql)
        verdict.rows_checked += len(warehouse_rows)
        by_version = defaultdict(list)
        for row in warehouse_rows:
            by_version[_version(row)].append(row)
        verdict.problem(fact.table, "versions stored more than once",
                        [v for v, rows in by_version.items() if len(rows) > 1])
        current = {_version(row): row for row in source_rows}
        verdict.problem(fact.table, "current versions missing",
                        [v for v in current if v not in by_version and v not in allowed])
        verdict.problem(fact.table, "current versions with other values",
                        [(row, by_version[v][0]) for v, row in current.items() if v in by_version
                         and by_version[v][0] != row])
        source_ids = {row[0] for row in source_rows}
        verdict.problem(fact.table, "ids not in the source",
                        sorted({row[0] for row in warehouse_rows} - source_ids))
        if history is not None:
            seen = history.get(fact.source, set())
            verdict.problem(fact.table, "versions the lake carried missing",
                            sorted(v for v in seen - set(by_version) if v not in allowed))
            verdict.problem(fact.table, "versions no ingested run carried", sorted(set(by_version) - seen))
        for position, dimension in fact.refers.items():
            values = {row[position] for row in warehouse_rows}
            if dimension == "dim_date":
                referenced_dates |= values
            else:
                verdict.problem(fact.table, f"keys into {dimension} that do not resolve",
                                sorted(values - present[dimension]))

    calendar = {row[0]: tuple(row) for row in query(
        warehouse, "SELECT date_id, year, month, day, day_of_week, day_name, month_name, quarter FROM dim_date")}
    verdict.problem("dim_date", "dates facts refer to missing", sorted(referenced_dates - set(calendar)))
    verdict.problem("dim_date", "rows with wrong derived columns",
                    [row for day, row in sorted(calendar.items()) if row != date_row(day)])
    return verdict
