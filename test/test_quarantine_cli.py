"""`totesys-etl quarantine` (contract §6): what is held back, per run, read from a real processed bucket."""
import json

import boto3
import pytest

from totesys_etl import cli, lake, quarantine
from totesys_etl.adapters import s3 as s3_adapter
from totesys_etl.logs import StageLog
from totesys_etl.process import run

RUN_A = "20221103T142052186000Z"
RUN_B = "20221104T090102500000Z"
STAMP = "2022-11-03 14:20:52.186"
ORDER_HEADER = ("sales_order_id,design_id,staff_id,counterparty_id,units_sold,unit_price,currency_id,"
                "agreed_delivery_date,agreed_payment_date,agreed_delivery_location_id,created_at,last_updated")


def order(order_id: int, delivery: str) -> str:
    return f"{order_id},1,1,1,3,2.50,1,{delivery},2022-11-11,1,{STAMP},{STAMP}"


def write_run(bucket: str, run_id: str, files: dict[str, tuple[str, int]]) -> None:
    s3, entries = boto3.client("s3"), {}
    for table, (body, rows) in files.items():
        key = lake.table_key(table, run_id, "csv")
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
        entries[table] = {"key": key, "rows": rows}
    s3.put_object(Bucket=bucket, Key=lake.manifest_key(run_id),
                  Body=json.dumps({"run_id": run_id, "files": entries}).encode())


@pytest.fixture
def held_back(buckets, monkeypatch):
    """A run with one bad order and one unreadable file, a clean run, and a loader's quarantine."""
    ingest, processed = buckets
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", ingest)
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", processed)
    orders = "\n".join([ORDER_HEADER, order(1, "2022-11-10"), order(2, "soon"), order(3, "2022-02-30"), ""])
    write_run(ingest, RUN_A, {"sales_order": (orders, 3),
                              "currency": ("currency_id,currency_code\n1,GBP\n", 1)})
    write_run(ingest, RUN_B, {"sales_order": ("\n".join([ORDER_HEADER, order(2, "2022-11-12"), ""]), 1)})
    settings = run.Settings.from_env()
    for run_id in (RUN_A, RUN_B):
        run.process_run(settings, run_id)
    parquet = lake.table_key("fact_payment", RUN_B, "parquet")   # what the loader quarantines
    boto3.client("s3").put_object(Bucket=processed, Key=parquet, Body=b"not parquet")
    quarantine.quarantine_file(processed, parquet, processed, RUN_B, "fact_payment Parquet does not read",
                               quarantine.QUARANTINED_FILE, StageLog("load"))
    return processed


def test_quarantine_lists_each_held_back_file_and_row_group_with_its_reason(held_back, capsys):
    assert cli.main(["quarantine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    orders = lake.table_key("sales_order", RUN_A, "csv")
    currency = lake.table_key("currency", RUN_A, "csv")
    parquet = lake.table_key("fact_payment", RUN_B, "parquet")
    assert lines == [
        f"{RUN_A}  currency  {currency}  whole file  quarantined_file: header 'currency_id,currency_code' is not "
        "the declared columns of currency",
        f"{RUN_A}  sales_order  {orders}  2 rows  quarantined_rows: agreed_delivery_date is not a date (2 rows)",
        f"{RUN_B}  fact_payment  {parquet}  whole file  quarantined_file: fact_payment Parquet does not read",
    ]


def test_quarantine_run_shows_only_that_run(held_back, capsys):
    assert cli.main(["quarantine", "--run", RUN_B]) == 0
    assert [line.split("  ")[:2] for line in capsys.readouterr().out.splitlines()] == [[RUN_B, "fact_payment"]]
    assert cli.main(["quarantine", "--run", "20990101T000000000000Z"]) == 0
    assert capsys.readouterr().out == "nothing is held back in run 20990101T000000000000Z\n"


def test_an_empty_bucket_holds_nothing_back(buckets, monkeypatch, capsys):
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    assert cli.main(["quarantine"]) == 0
    assert capsys.readouterr().out == "nothing is held back\n"


@pytest.mark.parametrize("bad", ["../20221103T142052186000Z", "2022", "20221103T142052186000Z/x", ""])
def test_a_malformed_run_id_is_a_usage_error_in_one_line(buckets, monkeypatch, capsys, bad):
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    assert cli.main(["quarantine", "--run", bad]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1 and "is not a run id" in out.err


def test_without_settings_quarantine_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)   # no .local/env here
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert cli.main(["quarantine"]) == 2
    assert "TOTESYS_INGEST_BUCKET" in capsys.readouterr().err


def test_a_key_with_a_control_character_is_still_one_line(buckets, monkeypatch, capsys):
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    key = "x\tDROP TABLE dim_date;.csv"
    boto3.client("s3").put_object(Bucket=buckets[0], Key=key, Body=b"x")
    quarantine.quarantine_file(buckets[0], key, buckets[1], RUN_A, "a stray\nreason",
                               quarantine.QUARANTINED_FILE, StageLog("load"))
    assert cli.main(["quarantine"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line == f"{RUN_A}  -  {key!r}  whole file  quarantined_file: a stray reason"


def test_a_reason_file_nested_too_deep_or_too_large_is_still_listed(buckets, monkeypatch, capsys):
    """A reason file `[[[…` (json raises RecursionError, not a ValueError) or one larger than any a stage
    writes (never read whole): each still one line, the listing goes on."""
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    s3 = boto3.client("s3")
    nested = lake.table_key("sales_order", RUN_A, "csv")
    s3.put_object(Bucket=buckets[1], Key=f"quarantine/{RUN_A}/{nested}.reason.json", Body=b"[" * 50_000)
    s3.put_object(Bucket=buckets[1], Key=f"quarantine/{RUN_B}/_runs/{RUN_B}.json.reason.json",
                  Body=b"{}".ljust(quarantine.MAX_REASON_BYTES + 1))
    assert cli.main(["quarantine"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{RUN_A}  sales_order  {nested}  whole file  unknown: its reason file is not JSON",
        f"{RUN_B}  -  _runs/{RUN_B}.json  whole file  unknown: its reason file is 16,777,217 bytes, not read"]


def test_both_manifests_of_a_run_and_a_copy_in_the_old_layout_are_all_listed(buckets, monkeypatch, capsys):
    """Each bucket's manifest of one run goes under its own key, and a copy the stages wrote before
    manifests had a folder per bucket (`quarantine/<run>/_runs/<run>.json`) is still listed."""
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    s3, key = boto3.client("s3"), lake.manifest_key(RUN_A)
    for bucket, body in zip(buckets, (b"{ingested", b"{processed")):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    log = StageLog("process")
    quarantine.quarantine_manifest(buckets[0], quarantine.INGESTED, buckets[1], RUN_A, "not JSON", log)
    quarantine.quarantine_manifest(buckets[1], quarantine.PROCESSED, buckets[1], RUN_A, "not JSON", log)
    s3.put_object(Bucket=buckets[1], Key=f"quarantine/{RUN_A}/{key}.reason.json", Body=json.dumps(
        {"key": key, "reason": "an old copy", "error_kind": quarantine.QUARANTINED_MANIFEST}).encode())
    assert cli.main(["quarantine"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{RUN_A}  -  {key}  whole file  quarantined_manifest: {reason}"
        for reason in ("an old copy", "in the ingested bucket: not JSON", "in the processed bucket: not JSON")]
    for origin, body in ((quarantine.INGESTED, b"{ingested"), (quarantine.PROCESSED, b"{processed")):
        assert s3.get_object(Bucket=buckets[1], Key=f"quarantine/{RUN_A}/{origin}/{key}")["Body"].read() == body


def test_a_file_over_the_copy_limit_is_quarantined_whole_and_a_missing_one_is_still_listed(buckets, monkeypatch,
                                                                                           capsys):
    """CopyObject refuses a source over 5 GiB: such a file is copied in parts (the limit lowered here to
    1 MiB), byte for byte; a file gone before its copy still gets its reason file, saying so."""
    monkeypatch.setattr(s3_adapter, "COPY_THRESHOLD", 1 << 20)
    monkeypatch.setattr(s3_adapter, "COPY_PART_SIZE", 5 << 20)
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    s3, body = boto3.client("s3"), bytes(range(256)) * (24 << 10)  # 6 MiB: two parts
    s3.put_object(Bucket=buckets[0], Key="landed/big.json", Body=body)
    log = StageLog("ingest")
    quarantine.quarantine_file(buckets[0], "landed/big.json", buckets[1], RUN_A, "not JSON", "quarantined_file", log)
    quarantine.quarantine_file(buckets[0], "landed/gone.json", buckets[1], RUN_A, "not JSON", "quarantined_file", log)
    copy = s3.get_object(Bucket=buckets[1], Key=quarantine.quarantine_key(RUN_A, "landed/big.json"))
    assert copy["Body"].read() == body and copy["ETag"].endswith('-2"')
    assert cli.main(["quarantine"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{RUN_A}  -  landed/big.json  whole file  quarantined_file: not JSON",
        f"{RUN_A}  -  landed/gone.json  whole file  quarantined_file: not JSON (the object does not exist)"]
