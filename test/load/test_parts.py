"""Runs loaded in parts (contract §4 "Parts"), against real PostgreSQL and moto: each part staged once,
the run published in one transaction, and the warehouse equal to the same runs loaded unparted.

Each case writes ordinary processed runs (conftest's ProcessedLake) into one lake, then a second
lake where every file of ten rows or more is split into parts with pyarrow under a parted manifest
(`manifest.parted_entry`). The unparted lake loaded into a fresh warehouse is the oracle.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from decimal import Decimal
from types import SimpleNamespace

import boto3
import pg8000.native
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from totesys_etl import lake, manifest
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.config import Settings
from totesys_etl.errors import InvalidInput
from totesys_etl.events import PartRequest, part_event
from totesys_etl.load.handler import lambda_handler
from totesys_etl.load.ledger import loaded_runs
from totesys_etl.fanout import WHOLE_RUN_ROWS_VARIABLE as WHOLE_ROWS_VARIABLE
from totesys_etl.load.run import load, warehouse_connection
from totesys_etl.schema.staging import STAGING_LEDGER, STAGING_TABLES

TODAY = None  # the handler seeds dim_date around the real date: so do the direct calls
REGION = "eu-west-2"
COUNTS = "SELECT (SELECT count(*) FROM fact_sales_order), (SELECT count(*) FROM fact_payment), " \
         "(SELECT count(*) FROM dim_staff), (SELECT count(*) FROM etl_load_ledger)"


def _runs(totesys) -> list[dict[str, list[dict]]]:
    """A first run of the whole source (grown to a few dozen orders and payments), then two runs of changes."""
    for n in range(3, 40):
        totesys.add("sales_order", n, design_id=1 + n % 2, staff_id=1 + n % 2, counterparty_id=1 + n % 2,
                    units_sold=n * 10, unit_price=Decimal(f"{n}.25"), currency_id=1 + n % 5,
                    agreed_delivery_date=f"2024-12-{1 + n % 28:02d}", agreed_payment_date=f"2025-01-{1 + n % 28:02d}",
                    agreed_delivery_location_id=1 + n % 3)
        totesys.add("transaction", n, transaction_type="SALE", sales_order_id=n, purchase_order_id=None)
        totesys.add("payment", n, transaction_id=n, counterparty_id=1 + n % 2, payment_amount=Decimal(f"{n}.5"),
                    currency_id=1, payment_type_id=1, paid=n % 3 == 0, payment_date=f"2024-11-{1 + n % 28:02d}",
                    company_ac_number=n, counterparty_ac_number=n + 1)
    first = {t: list(rows.values()) for t, rows in totesys.rows.items()}
    second = {"sales_order": [totesys.change("sales_order", n, units_sold=7) for n in range(1, 30, 3)],
              "address": [totesys.change("address", 1, city="Hull")],
              "staff": [totesys.change("staff", 2, department_id=1)]}
    third = {"sales_order": [totesys.change("sales_order", n, units_sold=8) for n in range(2, 40, 5)],
             "payment": [totesys.change("payment", n, paid=True) for n in range(3, 40, 4)]}
    return [first, second, third]


class PartedLake:
    """A second pair of buckets holding the same processed runs with their bigger files in parts."""

    def __init__(self, source_lake, warehouse_url: str):
        self.source, self.s3 = source_lake, boto3.client("s3")
        suffix = secrets.token_hex(4)
        self.ingested, self.processed = f"parted-in-{suffix}", f"parted-pr-{suffix}"
        for name in (self.ingested, self.processed):
            self.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.env = {"TOTESYS_WAREHOUSE_URL": warehouse_url, "TOTESYS_INGEST_BUCKET": self.ingested,
                    "TOTESYS_PROCESSED_BUCKET": self.processed}
        self.settings = Settings.from_env(self.env)
        self.parts: dict[str, list[PartRequest]] = {}
        self.whole: dict[str, int] = {}

    def copy_run(self, run_id: str, most_parts: int = 3, least_rows: int = 10) -> list[PartRequest]:
        """The run's processed files, each of `least_rows` rows or more (the big ones: facts, transactions,
        dates) split into up to `most_parts` parts; the others stay whole, as a real parted run's small tables."""
        unparted = json.loads(self.source.s3.get_object(Bucket=self.source.processed,
                                                        Key=lake.manifest_key(run_id))["Body"].read())
        files, requests = {}, []
        for name, entry in unparted["files"].items():
            body = self.source.s3.get_object(Bucket=self.source.processed, Key=entry["key"])["Body"].read()
            table = pq.read_table(io.BytesIO(body))
            if table.num_rows < least_rows:
                self.s3.put_object(Bucket=self.processed, Key=entry["key"], Body=body)
                files[name] = entry
                continue
            count = min(most_parts, table.num_rows)
            bounds = [table.num_rows * i // count for i in range(count + 1)]
            parts = []
            for i in range(count):
                buffer = io.BytesIO()
                pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), buffer)
                key = lake.part_key(name, run_id, "parquet", i)
                self.s3.put_object(Bucket=self.processed, Key=key, Body=buffer.getvalue())
                parts.append({"key": key, "rows": bounds[i + 1] - bounds[i]})
                requests.append(PartRequest(run_id, name, i))
            files[name] = manifest.parted_entry(parts)
        self.s3.put_object(Bucket=self.ingested, Key=lake.manifest_key(run_id),
                           Body=json.dumps({"run_id": run_id, "stage": "ingest", "files": {}, "rows": {}}))
        self.s3.put_object(Bucket=self.processed, Key=lake.manifest_key(run_id),
                           Body=json.dumps({**unparted, "files": files}))
        self.parts[run_id], self.whole[run_id] = requests, len(files) - len({r.table for r in requests})
        return requests


@pytest.fixture
def parted(processed_lake, totesys, kit, warehouse_url, fresh_warehouse, monkeypatch) -> SimpleNamespace:
    """Three runs in the unparted lake, the same runs in parts in a second lake loaded into `warehouse_url`,
    and `clean()`: the star tables of the unparted runs loaded into a fresh warehouse."""
    runs = [kit.run_id(n) for n in (1, 2, 3)]
    for run, versions in zip(runs, _runs(totesys)):
        processed_lake.write_run(run, versions)
    lake_b = PartedLake(processed_lake, warehouse_url)
    for run in runs:
        lake_b.copy_run(run)
    for name, value in lake_b.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(WHOLE_ROWS_VARIABLE, "1")   # staged: every run here holds more rows than that

    def clean(upto: int = 3) -> dict:
        settings = fresh_warehouse()
        load(settings, runs[:upto], today=TODAY)
        return kit.star_snapshot(settings.warehouse.url, with_system=False)

    return SimpleNamespace(runs=runs, lake=lake_b, settings=lake_b.settings, clean=clean,
                           data=lambda: kit.star_snapshot(warehouse_url, with_system=False),
                           whole=lambda: monkeypatch.setenv(WHOLE_ROWS_VARIABLE, "1000"))


def _staging_rows(url: str) -> int:
    conn = pg8000.native.Connection(**parse_url(url))
    try:
        return sum(conn.run(f'SELECT count(*) FROM "{t.name}"')[0][0]  # nosec - declared names
                   for t in (*STAGING_TABLES.values(), STAGING_LEDGER))
    finally:
        conn.close()


def _stage(request: PartRequest) -> dict:
    return lambda_handler(part_event(request), None)


def test_a_parted_run_loads_as_the_unparted_run_and_leaves_no_staging(parted, warehouse_url, run_sql):
    requests = parted.lake.parts[parted.runs[0]]
    assert {r.table for r in requests} >= {"fact_sales_order", "fact_payment", "etl_src_transaction", "dim_date"}
    result = load(parted.settings, None, today=TODAY)          # no fan-out configured: the sweep stages every part
    assert [r["run_id"] for r in result["runs"]] == parted.runs
    first = result["runs"][0]
    assert first["files"] == len(requests) + parted.lake.whole[parted.runs[0]]
    assert first["rows"]["fact_sales_order"] == 39 and first["rows"]["fact_payment"] == 39
    assert parted.data() == parted.clean()
    assert _staging_rows(warehouse_url) == 0
    # internal tables: unlogged, in public with etl_ names, and no view reads them
    assert run_sql(warehouse_url, "SELECT DISTINCT relpersistence::text FROM pg_class WHERE relname LIKE 'etl_stage%' "
                                  "AND relkind = 'r'") == [["u"]]
    assert run_sql(warehouse_url, "SELECT count(*) FROM pg_views WHERE definition LIKE '%etl_stage%'") == [[0]]


@pytest.mark.slow
def test_parts_out_of_order_each_replayed_publish_once_when_the_last_is_staged(parted, warehouse_url, kit, run_sql):
    run = parted.runs[0]
    requests = list(reversed(parted.lake.parts[run]))
    for i, request in enumerate(requests[:-1]):
        assert _stage(request)["runs"] == []
        assert _stage(requests[0])["runs"] == []                 # a replay of a staged part stages nothing twice
        assert run_sql(warehouse_url, COUNTS) == [[0, 0, 0, 0]]  # nothing visible before the last part
        assert run_sql(warehouse_url, "SELECT count(*) FROM etl_stage_ledger") == [[i + 1]]
    published = _stage(requests[-1])
    assert [r["run_id"] for r in published["runs"]] == [run]
    after = kit.star_snapshot(warehouse_url)                    # xmin and surrogate keys too
    for request in requests:                                    # every part replayed after the publish
        assert _stage(request)["runs"] == []
    assert lambda_handler({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": parted.lake.processed}, "object": {"key": lake.manifest_key(run)}}}]}, None)["runs"] == []
    assert kit.star_snapshot(warehouse_url) == after
    assert _staging_rows(warehouse_url) == 0
    load(parted.settings, None, today=TODAY)
    assert parted.data() == parted.clean()


@pytest.mark.slow
def test_a_later_run_published_before_an_earlier_one_ends_the_same(parted, warehouse_url):
    for run in reversed(parted.runs):
        for request in parted.lake.parts[run]:
            _stage(request)
    assert loaded_runs(warehouse_connection(parted.settings)) == set(parted.runs)
    assert parted.data() == parted.clean()


def _filenode(url: str, table: str) -> int:
    conn = pg8000.native.Connection(**parse_url(url))
    try:
        return conn.run("SELECT pg_relation_filenode(CAST(:t AS regclass))", t=table)[0][0]
    finally:
        conn.close()


def test_a_run_published_while_another_run_is_half_staged_leaves_that_run_s_rows(parted, warehouse_url):
    """The publish truncates a staging table only when no other run has rows in it (load/parts.py `clear`)."""
    first, second, _ = parted.runs
    staging = STAGING_TABLES["fact_sales_order"].name
    held = [r for r in parted.lake.parts[first] if r.table != "fact_sales_order"][-1]
    for request in parted.lake.parts[first]:
        if request != held:
            _stage(request)
    before = _filenode(warehouse_url, staging)
    for request in parted.lake.parts[second]:                       # published first, the first run half staged
        _stage(request)
    assert loaded_runs(warehouse_connection(parted.settings)) == {second}
    assert _filenode(warehouse_url, staging) == before             # deleted row by row: the first run's rows stay
    published = _stage(held)
    assert [r["run_id"] for r in published["runs"]] == [first]
    assert _filenode(warehouse_url, staging) != before             # nothing else staged: truncated
    load(parted.settings, None, today=TODAY)
    assert parted.data() == parted.clean()
    assert _staging_rows(warehouse_url) == 0


def _handler_in_subprocess(event: dict, crash_at: str) -> subprocess.CompletedProcess:
    code = ("import json; from totesys_etl.load.handler import lambda_handler; "
            f"lambda_handler(json.loads({json.dumps(event)!r}))")
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "TOTESYS_CRASH_AT": crash_at},
                          capture_output=True, timeout=120)


@pytest.mark.slow
def test_a_crash_staging_one_part_or_publishing_then_reruns_load_exactly_once(parted, warehouse_url, run_sql):
    run = parted.runs[0]
    requests = parted.lake.parts[run]
    crashed = _handler_in_subprocess(part_event(requests[1]), "load.before_commit")   # inside the part's transaction
    assert crashed.returncode == 137, crashed.stderr.decode()[-2000:]
    assert _staging_rows(warehouse_url) == 0
    crashed = _handler_in_subprocess(part_event(requests[1]), "load.after_commit")    # staged, then killed
    assert crashed.returncode == 137
    staged = run_sql(warehouse_url, "SELECT table_name, part FROM etl_stage_ledger")
    assert staged == [[requests[1].table, requests[1].part]]
    for request in requests[2:]:
        _stage(request)
    assert run_sql(warehouse_url, COUNTS) == [[0, 0, 0, 0]]
    crashed = _handler_in_subprocess({}, "load.before_commit")   # the sweep stages part 0, then dies before its commit
    assert crashed.returncode == 137
    _stage(requests[0])                                          # the last part: now the sweep's publish is next
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_load_ledger") == [[1]]
    load(parted.settings, None, today=TODAY)
    assert parted.data() == parted.clean()
    assert _staging_rows(warehouse_url) == 0


@pytest.mark.slow
def test_a_crash_in_the_publishing_transaction_shows_nothing_and_the_rerun_publishes(parted, warehouse_url, run_sql):
    run = parted.runs[0]
    for request in parted.lake.parts[run][:-1]:
        _stage(request)
    staged = _staging_rows(warehouse_url)
    crashed = _handler_in_subprocess(part_event(parted.lake.parts[run][-1]), "load.after_commit")  # last part staged
    assert crashed.returncode == 137
    crashed = _handler_in_subprocess({}, "load.before_commit")     # every part staged: the first transaction publishes
    assert crashed.returncode == 137
    assert run_sql(warehouse_url, COUNTS) == [[0, 0, 0, 0]] and _staging_rows(warehouse_url) > staged
    load(parted.settings, None, today=TODAY)
    assert parted.data() == parted.clean() and _staging_rows(warehouse_url) == 0


def test_parts_staged_at_once_by_three_invocations_in_different_orders_stage_once(parted, warehouse_url):
    run = parted.runs[0]
    requests = parted.lake.parts[run]
    orders = [requests, list(reversed(requests)), requests[1::2] + requests[::2]]
    barrier, results, errors = threading.Barrier(len(orders)), [], []

    def stage(order):
        try:
            barrier.wait(timeout=60)
            for request in order:
                results.append(load(parted.settings, part=request, wait_seconds=60, today=TODAY))
        except Exception as e:  # asserted below
            errors.append(e)

    threads = [threading.Thread(target=stage, args=(order,)) for order in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r["run_id"] for result in results for r in result["runs"]) == [run]   # published by one
    assert parted.data() == parted.clean(upto=1)
    assert _staging_rows(warehouse_url) == 0


def test_hostile_part_requests_stage_nothing(parted, warehouse_url, run_sql, log_lines):
    run = parted.runs[0]
    unparted = next(name for name in STAGING_TABLES
                    if name not in {r.table for r in parted.lake.parts[run]} and name.startswith("fact_"))
    for request in (PartRequest(run, "fact_sales_order", 99),       # a part the manifest does not name
                    PartRequest(run, "pg_class", 0),                # not a declared table
                    PartRequest(run, "etl_load_ledger", 0),         # the loader's own bookkeeping
                    PartRequest(run, "dim_staff", 0),               # declared, but never in a processed manifest
                    PartRequest(run, unparted, 0),                  # declared, but not in parts in this run
                    PartRequest("20991231T000000000000Z", "fact_sales_order", 0)):   # no such run
        result = _stage(request)
        assert (result["status"], result["runs"]) == ("ok", [])
    assert _staging_rows(warehouse_url) == 0 and run_sql(warehouse_url, COUNTS) == [[0, 0, 0, 0]]
    assert sum("names no part" in line["message"] for line in log_lines) == 5
    nested = "20991231T000000000001Z"  # its manifest a 50 KB `[[[…`: json raises RecursionError, not a ValueError
    boto3.client("s3").put_object(Bucket=parted.settings.processed_bucket, Key=lake.manifest_key(nested),
                                  Body=b"[" * 50_000)
    result = _stage(PartRequest(nested, "fact_sales_order", 0))
    assert (result["status"], result["runs"]) == ("ok", [])
    assert sum("manifest is unreadable" in line["message"] and "nested too deep" in line["message"]
               for line in log_lines) == 1
    for body in ({"run_id": run, "table": "fact_sales_order; DROP TABLE x", "part": 0},
                 {"run_id": "../x", "table": "fact_sales_order", "part": 0},
                 {"run_id": run, "table": "fact_sales_order", "part": -1}):
        with pytest.raises(InvalidInput):
            lambda_handler({"totesys_part": body}, None)
    assert _staging_rows(warehouse_url) == 0
    load(parted.settings, None, today=TODAY)
    assert parted.data() == parted.clean()


def test_a_bad_part_file_is_quarantined_once_and_the_rest_publishes(parted, warehouse_url, run_sql, log_lines):
    run = parted.runs[0]
    bad = next(r for r in parted.lake.parts[run] if r.table == "fact_payment")
    key = lake.part_key(bad.table, run, "parquet", bad.part)
    held = pq.read_table(io.BytesIO(parted.lake.s3.get_object(Bucket=parted.lake.processed, Key=key)["Body"].read()))
    parted.lake.s3.put_object(Bucket=parted.lake.processed, Key=key, Body=b"PAR1 not parquet at all")
    _stage(bad)
    _stage(bad)                                                     # replayed: not quarantined twice
    result = load(parted.settings, [run], today=TODAY)
    assert result["runs"][0]["quarantined"] == 1
    assert sum(line.get("error_kind") == "quarantined_file" for line in log_lines) == 1
    assert parted.lake.s3.get_object(Bucket=parted.lake.processed, Key=f"quarantine/{run}/{key}")
    held_ids = set(held.column("payment_id").to_pylist())
    stored = {r[0] for r in run_sql(warehouse_url, "SELECT payment_id FROM fact_payment")}
    assert stored == set(range(1, 40)) - held_ids and held_ids       # every other row loaded, those held back
    assert _staging_rows(warehouse_url) == 0


def _published(log_lines, run_id: str) -> dict:
    return next(line for line in log_lines if line["message"] == "run loaded" and line.get("run_id") == run_id)


def test_a_first_parted_run_goes_straight_into_its_empty_tables(parted, warehouse_url, log_lines):
    """The publish of a first load skips the temp tables and the merge (load/parts.py `fill_direct`):
    at 30M orders that merge kept the publishing invocation busy for most of Lambda's 15 minutes."""
    run = parted.runs[0]
    load(parted.settings, [run], today=TODAY)
    assert {"fact_sales_order", "fact_payment", "etl_src_transaction"} <= set(_published(log_lines, run)["direct"])
    assert parted.data() == parted.clean(upto=1)
    load(parted.settings, parted.runs[1:], today=TODAY)              # the later runs merge into full tables
    assert not {"fact_sales_order", "etl_src_sales_order"} & set(_published(log_lines, parted.runs[2])["direct"])
    assert parted.data() == parted.clean()


def test_a_version_in_two_parts_of_a_first_run_falls_back_to_the_merge(parted, warehouse_url, log_lines):
    """PostgreSQL rejects the direct way (a key twice); the temp table and merge store it once, as unparted."""
    run = parted.runs[0]
    first, second = (lake.part_key("etl_src_transaction", run, "parquet", i) for i in (0, 1))
    read = lambda key: pq.read_table(io.BytesIO(  # noqa: E731
        parted.lake.s3.get_object(Bucket=parted.lake.processed, Key=key)["Body"].read()))
    repeated = pa.concat_tables([read(second), read(first).slice(0, 1)])
    buffer = io.BytesIO()
    pq.write_table(repeated, buffer)
    parted.lake.s3.put_object(Bucket=parted.lake.processed, Key=second, Body=buffer.getvalue())
    load(parted.settings, [run], today=TODAY)
    published = _published(log_lines, run)
    assert "etl_src_transaction" not in published["direct"] and "fact_sales_order" in published["direct"]
    assert parted.data() == parted.clean(upto=1)
    assert _staging_rows(warehouse_url) == 0


def test_a_reader_polling_during_the_staging_never_sees_half_a_run(parted, warehouse_url, migrated):
    run = parted.runs[0]
    final = [39, 39, 2, 1]
    seen, stop = [], threading.Event()

    def reader():
        conn = pg8000.native.Connection(**parse_url(warehouse_url))
        try:
            while not stop.is_set():
                seen.append(tuple(conn.run(COUNTS)[0]))
        finally:
            conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for request in parted.lake.parts[run]:
            during = len(seen)
            _stage(request)
        deadline = time.monotonic() + 30
        while (len(seen) < 2 or seen[-1] != tuple(final)) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert set(seen) <= {(0, 0, 0, 0), tuple(final)}, sorted(set(seen))
    assert seen[0] == (0, 0, 0, 0) and seen[-1] == tuple(final)
    assert during > len(parted.lake.parts[run])          # it did poll while the parts were staged


# Runs small enough for one invocation (load/parts.py `loads_whole`): their parts are loaded as files.

def _part_logs(log_lines) -> list[dict]:
    return [line for line in log_lines if line["message"] == "part staged"]


def test_a_run_within_the_whole_rows_loads_its_parts_as_files_and_never_stages(parted, warehouse_url, log_lines):
    parted.whole()
    run = parted.runs[0]
    result = load(parted.settings, None, today=TODAY)
    assert [r["run_id"] for r in result["runs"]] == parted.runs
    assert result["runs"][0]["files"] == len(parted.lake.parts[run]) + parted.lake.whole[run]
    assert {"fact_sales_order", "fact_payment", "etl_src_transaction"} <= set(_published(log_lines, run)["direct"])
    assert _part_logs(log_lines) == [] and _staging_rows(warehouse_url) == 0
    assert parted.data() == parted.clean()


def test_a_part_request_for_a_run_loaded_whole_publishes_it_whole_once(parted, warehouse_url, log_lines):
    """A part request (a replay, or sent before the setting changed) never stages a run loaded whole."""
    parted.whole()
    run = parted.runs[0]
    requests = parted.lake.parts[run]
    assert [r["run_id"] for r in _stage(requests[-1])["runs"]] == [run]
    for request in requests:
        assert _stage(request)["runs"] == []
    assert _part_logs(log_lines) == [] and _staging_rows(warehouse_url) == 0
    assert parted.data() == parted.clean(upto=1)


def test_a_run_begun_staged_ends_staged_when_the_setting_grows(parted, warehouse_url, log_lines):
    run = parted.runs[0]
    requests = parted.lake.parts[run]
    _stage(requests[0])                                       # staged under a setting of one row
    parted.whole()
    assert [r["run_id"] for r in load(parted.settings, [run], today=TODAY)["runs"]] == [run]
    assert len(_part_logs(log_lines)) == len(requests)        # the rest staged too, as the run began
    assert _staging_rows(warehouse_url) == 0
    assert parted.data() == parted.clean(upto=1)


def test_a_whole_run_with_a_version_in_two_parts_or_a_bad_part_keeps_every_other_row_once(
        parted, warehouse_url, run_sql, log_lines):
    """A rejected direct copy takes the temp table and merge, where each part is judged alone."""
    parted.whole()
    run = parted.runs[0]
    read = lambda key: pq.read_table(io.BytesIO(  # noqa: E731
        parted.lake.s3.get_object(Bucket=parted.lake.processed, Key=key)["Body"].read()))
    first, second = (lake.part_key("etl_src_transaction", run, "parquet", i) for i in (0, 1))
    buffer = io.BytesIO()
    pq.write_table(pa.concat_tables([read(second), read(first).slice(0, 1)]), buffer)
    parted.lake.s3.put_object(Bucket=parted.lake.processed, Key=second, Body=buffer.getvalue())
    bad = lake.part_key("fact_payment", run, "parquet", 1)
    held = set(read(bad).column("payment_id").to_pylist())
    parted.lake.s3.put_object(Bucket=parted.lake.processed, Key=bad, Body=b"PAR1 not parquet at all")

    result = load(parted.settings, [run], today=TODAY)
    assert result["runs"][0]["quarantined"] == 1
    assert [line["key"] for line in log_lines if line.get("error_kind") == "quarantined_file"] == [bad]
    assert not {"etl_src_transaction", "fact_payment"} & set(_published(log_lines, run)["direct"])
    stored = {r[0] for r in run_sql(warehouse_url, "SELECT payment_id FROM fact_payment")}
    assert stored == set(range(1, 40)) - held and held
    assert run_sql(warehouse_url, "SELECT count(*), count(DISTINCT transaction_id) FROM etl_src_transaction") \
        == [[39, 39]]
    assert _part_logs(log_lines) == [] and _staging_rows(warehouse_url) == 0


@pytest.mark.slow
def test_a_crash_loading_a_run_whole_then_a_rerun_loads_it_exactly_once(parted, warehouse_url, run_sql):
    parted.whole()
    for point in ("load.before_commit", "load.after_commit"):
        crashed = _handler_in_subprocess({}, point)
        assert crashed.returncode == 137, crashed.stderr.decode()[-2000:]
        assert _staging_rows(warehouse_url) == 0
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_load_ledger") == [[1]]   # the first run committed
    load(parted.settings, None, today=TODAY)
    assert parted.data() == parted.clean()
