"""Processing runs against real S3 (moto's server): outputs, quarantine, replays, concurrency, sweeps."""
import json
import threading
from datetime import date, datetime, time
from decimal import Decimal

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from totesys_etl import calendar, lake
from totesys_etl import manifest as manifests
from totesys_etl.process import run
from totesys_etl.schema import star_table, state_table

RUN_A = "20221103T142052186000Z"
RUN_B = "20221104T090102500000Z"
RUN_C = "20221105T101010000001Z"
T1 = datetime(2022, 11, 3, 14, 20, 52, 186000)
T2 = datetime(2022, 11, 4, 9, 1, 2, 500000)

# Typed source rows: what goes into PostgreSQL, and (for state tables) exactly what must come out.
SOURCE = {
    "address": [
        {"address_id": 1, "address_line_1": '"Quoted", comma\nnew line 🚀', "address_line_2": "",
         "district": None, "city": "Åre", "postal_code": "00123", "country": "Sweden", "phone": "  0046 ",
         "created_at": T1, "last_updated": T2},
        {"address_id": 5, "address_line_1": "5 Lane", "address_line_2": None, "district": "", "city": "Leeds",
         "postal_code": "LS1", "country": "UK", "phone": "0113", "created_at": T1, "last_updated": T1}],
    "counterparty": [{"counterparty_id": 4, "counterparty_legal_name": "O'Brien; DROP TABLE x; --",
                      "legal_address_id": 5, "commercial_contact": None, "delivery_contact": "",
                      "created_at": T1, "last_updated": T1}],
    "currency": [{"currency_id": 1, "currency_code": "GBP", "created_at": T1, "last_updated": T1}],
    "department": [{"department_id": 2, "department_name": "Sales", "location": None, "manager": "Ann",
                    "created_at": T1, "last_updated": T1}],
    "design": [{"design_id": 2, "design_name": "Wooden", "file_location": "/usr", "file_name": "w.json",
                "created_at": T1, "last_updated": T1}],
    "staff": [{"staff_id": 3, "first_name": "Zoë", "last_name": "", "department_id": 2,
               "email_address": "z@x.com", "created_at": T1, "last_updated": T1}],
    "payment_type": [{"payment_type_id": 1, "payment_type_name": "SALES_RECEIPT", "created_at": T1,
                      "last_updated": T1}],
    "transaction": [{"transaction_id": 1, "transaction_type": "SALE", "sales_order_id": 7,
                     "purchase_order_id": None, "created_at": T1, "last_updated": T1}],
    "sales_order": [{"sales_order_id": 7, "design_id": 2, "staff_id": 3, "counterparty_id": 4,
                     "units_sold": 5, "unit_price": Decimal("12345678.91"), "currency_id": 1,
                     "agreed_delivery_date": "2022-11-07", "agreed_payment_date": "2022-11-08",
                     "agreed_delivery_location_id": 5, "created_at": T1, "last_updated": T2}],
    "purchase_order": [{"purchase_order_id": 9, "staff_id": 3, "counterparty_id": 4, "item_code": "007",
                        "item_quantity": 2, "item_unit_price": Decimal("12345678901234567.89"),
                        "currency_id": 1, "agreed_delivery_date": "2023-01-01",
                        "agreed_payment_date": "2022-12-31", "agreed_delivery_location_id": 1,
                        "created_at": T1, "last_updated": T1}],
    "payment": [{"payment_id": 11, "transaction_id": 1, "counterparty_id": 4,
                 "payment_amount": Decimal("1234567890.123456789"), "currency_id": 1, "payment_type_id": 1,
                 "paid": True, "payment_date": "2022-11-09", "company_ac_number": 1234,
                 "counterparty_ac_number": 5678, "created_at": T1, "last_updated": T1}],
}

STAMP_1 = {"date": date(2022, 11, 3), "time": time(14, 20, 52, 186000)}
FACT_ROWS = {
    "fact_sales_order": [{
        "sales_order_id": 7, "created_date": STAMP_1["date"], "created_time": STAMP_1["time"],
        "last_updated_date": date(2022, 11, 4), "last_updated_time": time(9, 1, 2, 500000),
        "sales_staff_id": 3, "counterparty_id": 4, "units_sold": 5, "unit_price": Decimal("12345678.91"),
        "currency_id": 1, "design_id": 2, "agreed_payment_date": date(2022, 11, 8),
        "agreed_delivery_date": date(2022, 11, 7), "agreed_delivery_location_id": 5}],
    "fact_purchase_order": [{
        "purchase_order_id": 9, "created_date": STAMP_1["date"], "created_time": STAMP_1["time"],
        "last_updated_date": STAMP_1["date"], "last_updated_time": STAMP_1["time"], "staff_id": 3,
        "counterparty_id": 4, "item_code": "007", "item_quantity": 2,
        "item_unit_price": Decimal("12345678901234567.89"), "currency_id": 1,
        "agreed_delivery_date": date(2023, 1, 1), "agreed_payment_date": date(2022, 12, 31),
        "agreed_delivery_location_id": 1}],
    "fact_payment": [{
        "payment_id": 11, "created_date": STAMP_1["date"], "created_time": STAMP_1["time"],
        "last_updated_date": STAMP_1["date"], "last_updated_time": STAMP_1["time"], "transaction_id": 1,
        "counterparty_id": 4, "payment_amount": Decimal("1234567890.123456789"), "currency_id": 1,
        "payment_type_id": 1, "paid": True, "payment_date": date(2022, 11, 9)}],
}
FACT_DATES = {date(2022, 11, 3), date(2022, 11, 4), date(2022, 11, 7), date(2022, 11, 8), date(2023, 1, 1),
              date(2022, 12, 31), date(2022, 11, 9)}


def csvs(copy_csv, tables=SOURCE) -> dict:
    return {t: (copy_csv(t, rows), len(rows)) for t, rows in tables.items()}


def test_a_run_becomes_every_declared_output(lake_pair, copy_csv):
    lake_pair.write_run(RUN_A, csvs(copy_csv))
    result = run.process_run(lake_pair.settings, RUN_A)

    facts = ("sales_order", "purchase_order", "payment")
    outputs = [*FACT_ROWS, "dim_date", *(f"etl_src_{t}" for t in SOURCE if t not in facts)]
    assert result.run_id == RUN_A and result.quarantined == 0
    assert result.rows == {**{t: 1 for t in outputs}, "etl_src_address": 2, "dim_date": len(FACT_DATES)}
    for fact, rows in FACT_ROWS.items():
        table = lake_pair.parquet(fact, RUN_A)
        assert table.schema == star_table(fact).arrow_schema
        assert table.to_pylist() == rows
    for source, rows in SOURCE.items():
        if source not in ("sales_order", "purchase_order", "payment"):
            table = lake_pair.parquet(f"etl_src_{source}", RUN_A)
            assert table.schema == state_table(source).arrow_schema
            assert table.to_pylist() == rows
    dim_date = lake_pair.parquet("dim_date", RUN_A)
    assert dim_date.schema == star_table("dim_date").arrow_schema
    assert dim_date.to_pylist() == calendar.date_rows(pa.array(sorted(FACT_DATES), pa.date32())).to_pylist()
    assert dim_date.to_pylist()[0] == {"date_id": date(2022, 11, 3), "year": 2022, "month": 11, "day": 3,
                                       "day_of_week": 4, "day_name": "Thursday", "month_name": "November",
                                       "quarter": 4}

    manifest = lake_pair.manifest(RUN_A)
    assert manifest == {"run_id": RUN_A, "stage": "process", "format": 1, "quarantined": [],
                        "files": {t: {"key": lake.table_key(t, RUN_A, "parquet"), "rows": result.rows[t]}
                                  for t in outputs}}
    assert lake_pair.keys() == sorted([lake.manifest_key(RUN_A), *(lake.table_key(t, RUN_A, "parquet")
                                                                   for t in outputs)])


def test_the_lake_s_parquet_has_no_dictionary_pages(lake_pair, copy_csv):
    """Plain values under snappy: a dictionary per row group of nearly distinct ids, times and amounts
    cost half the writer's CPU and gave larger files (readme_files/benchmarks.md). Readers see the same
    table either way (the test above); this keeps the cheaper encoding."""
    lake_pair.write_run(RUN_A, csvs(copy_csv))
    run.process_run(lake_pair.settings, RUN_A)
    for key in [k for k in lake_pair.keys() if k.endswith(".parquet")]:
        metadata = pq.ParquetFile(pa.BufferReader(lake_pair.get(key))).metadata
        for group in range(metadata.num_row_groups):
            for column in range(metadata.num_columns):
                chunk = metadata.row_group(group).column(column)
                assert not chunk.has_dictionary_page and chunk.compression == "SNAPPY", (key, chunk.path_in_schema)


def test_the_lake_s_parquet_carries_page_checksums_so_a_flipped_byte_is_caught(lake_pair, copy_csv):
    """The loader verifies page checksums (load/files.py `open_parquet`); written without them, a
    damaged data page in the lake would load wrong values silently instead of being quarantined."""
    lake_pair.write_run(RUN_A, csvs(copy_csv))
    run.process_run(lake_pair.settings, RUN_A)
    key = next(k for k in lake_pair.keys() if k.endswith(".parquet") and "fact_sales_order" in k)
    body = bytearray(lake_pair.get(key))
    chunk = pq.ParquetFile(pa.BufferReader(bytes(body))).metadata.row_group(0).column(1)
    body[chunk.data_page_offset + chunk.total_compressed_size - 2] ^= 0xFF   # inside the page's data
    damaged = pq.ParquetFile(pa.BufferReader(bytes(body)), page_checksum_verification=True)
    with pytest.raises(OSError, match="CRC"):
        damaged.read()


def test_an_empty_run_writes_only_its_manifest(lake_pair):
    lake_pair.write_run(RUN_A, {})
    assert run.process_run(lake_pair.settings, RUN_A).rows == {}
    assert lake_pair.keys() == [lake.manifest_key(RUN_A)]
    assert lake_pair.manifest(RUN_A)["files"] == {}


def test_bad_files_are_quarantined_and_the_rest_of_the_run_goes_on(lake_pair, copy_csv):
    tables = ("address", "currency", "sales_order", "payment", "purchase_order", "staff")
    files = csvs(copy_csv, {t: SOURCE[t] for t in tables})
    good_currency = files["currency"][0]
    files["currency"] = (good_currency.replace(b"\n1,GBP,", b"\n1,GBP,extra,"), 1)       # extra column
    null_price = files["sales_order"][0].replace(b",5,12345678.91,", b",5,,")
    assert null_price != files["sales_order"][0]
    files["sales_order"] = (null_price, 1)                                                # NULL, NOT NULL: a row
    files["payment"] = (files["payment"][0][:-60], 1)                       # truncated: fields missing
    files["purchase_order"] = (files["purchase_order"][0].replace(b"2022-12-31", b"31/12/2022"), 1)  # a row
    files["staff"] = (files["staff"][0], 2)                                               # row count
    lake_pair.write_run(RUN_A, files)

    result = run.process_run(lake_pair.settings, RUN_A)
    assert result.quarantined == 5
    assert result.rows == {"etl_src_address": 2}
    manifest = lake_pair.manifest(RUN_A)
    assert set(manifest["files"]) == {"etl_src_address"}
    bad = ["currency", "payment", "purchase_order", "sales_order", "staff"]
    assert [q["key"] for q in manifest["quarantined"]] == [lake.table_key(t, RUN_A, "csv") for t in bad]
    kinds = {q["table"]: q["error_kind"] for q in manifest["quarantined"]}
    assert kinds == {"currency": "quarantined_file", "payment": "quarantined_file", "staff": "quarantined_file",
                     "sales_order": "quarantined_rows", "purchase_order": "quarantined_rows"}
    for table in bad:
        key = lake.table_key(table, RUN_A, "csv")
        assert lake_pair.get(key, lake_pair.ingest) == files[table][0]   # the original stays
        target = f"quarantine/{RUN_A}/{key}" + (".rows.csv" if kinds[table] == "quarantined_rows" else "")
        reason = json.loads(lake_pair.get(f"{target}.reason.json"))
        assert reason["key"] == key and reason["error_kind"] == kinds[table] and reason["reason"]
        if kinds[table] == "quarantined_file":
            assert lake_pair.get(target) == files[table][0]
        else:   # the one row, as written, with its reason
            header, row = lake_pair.get(target).decode().splitlines()
            assert header.startswith('"sales_order_id"' if table == "sales_order" else '"purchase_order_id"')
            assert reason["rows"] == 1 and ("unit_price is NULL" in row or "agreed_payment_date" in row)
    assert "dim_date" not in manifest["files"]   # quarantined facts bring no dates


def test_a_corrupt_manifest_is_quarantined_and_the_run_still_gets_a_processed_manifest(lake_pair, copy_csv):
    bodies = {RUN_A: b'{"run_id": "2022', RUN_B: json.dumps({"run_id": RUN_B}).encode(),
              RUN_C: json.dumps({"run_id": RUN_A, "files": {}}).encode()}
    for run_id, body in bodies.items():
        lake_pair.write_run(run_id, csvs(copy_csv, {"currency": SOURCE["currency"]}), manifest=body)
        result = run.process_run(lake_pair.settings, run_id)
        assert result.rows == {} and result.quarantined == 1
        manifest = lake_pair.manifest(run_id)
        assert manifest["files"] == {}
        assert manifest["quarantined"][0]["key"] == lake.manifest_key(run_id)
        assert manifest["quarantined"][0]["error_kind"] == "quarantined_manifest"
        assert lake_pair.get(f"quarantine/{run_id}/ingested/_runs/{run_id}.json") == body
        assert json.loads(lake_pair.get(f"quarantine/{run_id}/ingested/_runs/{run_id}.json.reason.json"))["reason"]
    assert not [k for k in lake_pair.keys() if k.endswith(".parquet")]


def test_hostile_keys_are_quarantined_unopened_and_nothing_lands_elsewhere(lake_pair, copy_csv):
    currency = copy_csv("currency", SOURCE["currency"])
    hostile = {"staff": "staff/../../currency/x.csv", "design": "design/x'; DROP TABLE design; --\".csv",
               "department": f"/etc/passwd/{RUN_A}.csv", "_prisma_migrations": "_prisma_migrations/a.csv",
               "address": lake.table_key("address", RUN_B, "csv")}
    for key in hostile.values():
        lake_pair.put(key, currency)
    lake_pair.write_run(RUN_A, {"currency": (currency, 1)},
                        extra_entries={t: {"key": k, "rows": 1} for t, k in hostile.items()})

    result = run.process_run(lake_pair.settings, RUN_A)
    assert result.rows == {"etl_src_currency": 1}
    manifest = lake_pair.manifest(RUN_A)
    assert sorted(q["key"] for q in manifest["quarantined"]) == sorted(hostile.values())
    assert {q["error_kind"] for q in manifest["quarantined"]} == {"quarantined_manifest"}
    expected = {lake.manifest_key(RUN_A), lake.table_key("etl_src_currency", RUN_A, "parquet"),
                f"quarantine/{RUN_A}/ingested/_runs/{RUN_A}.json",
                f"quarantine/{RUN_A}/ingested/_runs/{RUN_A}.json.reason.json"}
    assert set(lake_pair.keys()) == expected
    reason = json.loads(lake_pair.get(f"quarantine/{RUN_A}/ingested/_runs/{RUN_A}.json.reason.json"))
    assert all(repr(k) in reason["reason"] for k in hostile.values())


def test_a_manifest_with_many_hostile_entries_lists_the_first_and_counts_the_rest(lake_pair, copy_csv, monkeypatch):
    """Millions of hostile entries in a 16 MiB manifest, each listed with its reason, made a processed
    manifest too large to write: the run failed for good. Here at a small scale (a 160 KiB manifest cap,
    five entries listed): the first are listed, the rest counted in one entry, a key of 30,007
    characters shown clipped; the run completes, and the quarantined manifest's copy holds them all."""
    monkeypatch.setattr(manifests, "MAX_BYTES", 160 << 10)
    monkeypatch.setattr(manifests, "MAX_LISTED_REJECTIONS", 5)
    currency = copy_csv("currency", SOURCE["currency"])
    hostile = {f"t{i:04d}": {"key": f"t/{i}.csv", "rows": 1} for i in range(2_000)}
    hostile["design"] = {"key": "design/" + "x" * 30_000, "rows": 1}
    lake_pair.write_run(RUN_A, {"currency": (currency, 1)}, extra_entries=hostile)

    result = run.process_run(lake_pair.settings, RUN_A)
    assert result.rows == {"etl_src_currency": 1} and result.quarantined == len(hostile)
    manifest = lake_pair.manifest(RUN_A)
    *listed, rest = manifest["quarantined"]
    assert [q["key"] for q in listed] == [hostile["design"]["key"][:200] + "… (30,007 characters)",
                                          "t/0.csv", "t/1.csv", "t/2.csv", "t/3.csv"]
    assert rest == {"key": lake.manifest_key(RUN_A), "error_kind": "quarantined_manifest", "more": len(hostile) - 5,
                    "reason": f"and {len(hostile) - 5:,} more hostile entries, not listed: the quarantined "
                              "manifest holds them all"}
    copy = f"quarantine/{RUN_A}/ingested/_runs/{RUN_A}.json"
    assert json.loads(lake_pair.get(copy))["files"].keys() == {"currency", *hostile}
    reason = json.loads(lake_pair.get(f"{copy}.reason.json"))["reason"]
    assert reason.count("is not a table this stage reads") == 4 and len(reason) < 2_000, reason
    assert reason.endswith(f"; and {len(hostile) - 5:,} more hostile entries, not listed: the quarantined manifest "
                           "holds them all")


def test_processing_a_run_again_changes_nothing(lake_pair, copy_csv):
    lake_pair.write_run(RUN_A, csvs(copy_csv))
    assert run.process_run(lake_pair.settings, RUN_A) is not None
    before = boto3.client("s3").list_objects_v2(Bucket=lake_pair.processed)["Contents"]
    assert run.process_run(lake_pair.settings, RUN_A) is None
    assert boto3.client("s3").list_objects_v2(Bucket=lake_pair.processed)["Contents"] == before


def test_two_processors_at_once_give_the_output_of_one(lake_pair, new_lake, copy_csv):
    files = csvs(copy_csv)
    files["currency"] = (files["currency"][0] + b"2,USD\n", 2)   # one quarantine too
    clean = new_lake()
    for target in (lake_pair, clean):
        target.write_run(RUN_A, files)
    run.process_run(clean.settings, RUN_A)

    start, results, errors = threading.Barrier(2), [], []

    def worker():
        start.wait()
        try:
            results.append(run.process_run(lake_pair.settings, RUN_A))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lake_pair.snapshot() == clean.snapshot()
    assert len(lake_pair.manifest(RUN_A)["quarantined"]) == 1


def test_sweep_processes_every_pending_run_and_moves_the_mark(lake_pair, copy_csv):
    currency = {"currency": SOURCE["currency"]}
    for run_id in (RUN_A, RUN_B, RUN_C):
        lake_pair.write_run(run_id, csvs(copy_csv, currency))
    run.process_run(lake_pair.settings, RUN_C)        # the newest is done first (an event), A and B are not
    log = run.StageLog("process")

    results = run.sweep(lake_pair.settings, log)
    assert [r.run_id for r in results] == [RUN_A, RUN_B]
    assert all(lake.manifest_exists(lake_pair.processed, r) for r in (RUN_A, RUN_B, RUN_C))
    assert lake.read_mark(lake_pair.processed, run.MARK_PREFIX) == RUN_C

    assert run.sweep(lake_pair.settings, log) == []
    marks = [k for k in lake_pair.keys() if k.startswith(run.MARK_PREFIX)]
    assert len(marks) == 1                             # a sweep that moved nothing writes no mark


def test_a_corrupt_manifest_dated_in_the_future_never_hides_the_runs_that_come_after_it(lake_pair, copy_csv):
    currency = csvs(copy_csv, {"currency": SOURCE["currency"]})
    lake_pair.write_run(RUN_A, currency)
    future = "20990101T000000000000Z"
    lake_pair.put(lake.manifest_key(future), b"{not json")
    log = run.StageLog("process")
    assert [r.run_id for r in run.sweep(lake_pair.settings, log)] == [RUN_A, future]  # quarantined
    assert lake.read_mark(lake_pair.processed, run.MARK_PREFIX) == RUN_A          # not the future one
    lake_pair.write_run(RUN_B, currency)  # a run that appears later, below the bogus one; no event
    assert [r.run_id for r in run.sweep(lake_pair.settings, log)] == [RUN_B]


def test_a_manifest_nested_too_deep_or_too_large_is_quarantined_and_never_stops_the_sweep(lake_pair, copy_csv):
    """A 50 KB `[[[…` (json raises RecursionError, not a ValueError) failed its run on every attempt,
    and held the sweep's mark; a manifest over manifest.MAX_BYTES is judged by its size alone (this one
    is valid JSON padded with blanks). Both are quarantined as any corrupt manifest is."""
    lake_pair.write_run(RUN_A, csvs(copy_csv, {"currency": SOURCE["currency"]}))
    nested, large = "20990101T000000000000Z", "20990101T000000000001Z"
    bodies = {nested: b"[" * 50_000,
              large: json.dumps({"run_id": large, "files": {}}).encode().ljust(manifests.MAX_BYTES + 1)}
    for run_id, body in bodies.items():
        lake_pair.put(lake.manifest_key(run_id), body)
    assert [r.run_id for r in run.sweep(lake_pair.settings, run.StageLog("process"))] == [RUN_A, nested, large]
    reasons = {}
    for run_id in bodies:
        manifest = lake_pair.manifest(run_id)
        assert manifest["files"] == {} and [q["key"] for q in manifest["quarantined"]] == [lake.manifest_key(run_id)]
        copy = f"quarantine/{run_id}/ingested/_runs/{run_id}.json"
        reasons[run_id] = json.loads(lake_pair.get(f"{copy}.reason.json"))["reason"]
    assert reasons == {nested: f"in the ingested bucket: manifest _runs/{nested}.json is nested too deep to decode",
                       large: f"in the ingested bucket: manifest _runs/{large}.json is 16,777,217 bytes, more than "
                              "a manifest may be (16,777,216)"}
    assert lake_pair.get(f"quarantine/{nested}/ingested/_runs/{nested}.json") == bodies[nested]
    assert lake.read_mark(lake_pair.processed, run.MARK_PREFIX) == RUN_A


def test_a_failed_run_holds_the_mark_but_not_the_runs_after_it(lake_pair, copy_csv):
    currency = csvs(copy_csv, {"currency": SOURCE["currency"]})
    for run_id in (RUN_A, RUN_B, RUN_C):
        lake_pair.write_run(run_id, currency)
    # B's file is archived: S3 refuses to read it (InvalidObjectState), a failure, not bad input.
    key_b = lake.table_key("currency", RUN_B, "csv")
    boto3.client("s3").put_object(Bucket=lake_pair.ingest, Key=key_b, Body=currency["currency"][0],
                                  StorageClass="GLACIER")
    log = run.StageLog("process")
    with pytest.raises(run.ProcessFailed, match=rf"{RUN_B} \(S3 \w+: InvalidObjectState\)"):  # names the cause
        run.sweep(lake_pair.settings, log)
    done = [lake.manifest_exists(lake_pair.processed, r) for r in (RUN_A, RUN_B, RUN_C)]
    assert done == [True, False, True]
    assert lake.read_mark(lake_pair.processed, run.MARK_PREFIX) == RUN_A

    lake_pair.put(key_b, currency["currency"][0])      # restored
    assert [r.run_id for r in run.sweep(lake_pair.settings, log)] == [RUN_B]
    assert lake.read_mark(lake_pair.processed, run.MARK_PREFIX) == RUN_C
    assert lake_pair.parquet("etl_src_currency", RUN_B).to_pylist() == SOURCE["currency"]


def test_a_file_the_manifest_names_but_that_does_not_exist_is_quarantined(lake_pair, copy_csv):
    lake_pair.write_run(RUN_A, csvs(copy_csv, {"currency": SOURCE["currency"], "design": SOURCE["design"]}))
    boto3.client("s3").delete_object(Bucket=lake_pair.ingest, Key=lake.table_key("design", RUN_A, "csv"))
    result = run.process_run(lake_pair.settings, RUN_A)
    assert result.rows == {"etl_src_currency": 1} and result.quarantined == 1
    key = lake.table_key("design", RUN_A, "csv")
    assert [q["key"] for q in lake_pair.manifest(RUN_A)["quarantined"]] == [key]
    assert "does not exist" in json.loads(lake_pair.get(f"quarantine/{RUN_A}/{key}.reason.json"))["reason"]
    assert f"quarantine/{RUN_A}/{key}" not in lake_pair.keys()


def test_a_run_without_an_ingested_manifest_is_left_alone(lake_pair):
    assert run.process_run(lake_pair.settings, RUN_A) is None
    assert lake_pair.keys() == []


def test_only_a_run_id_names_a_run(lake_pair):
    with pytest.raises(ValueError):
        run.process_run(lake_pair.settings, "../20221103T142052186000Z")
