"""A run in parts (contract §4 "Parts") through the processor against moto's S3: each part by an
invocation of its own, in any order, replayed, crashed, or asked for by a hostile request, ends
in the same lake as one invocation processing every part in turn."""
from __future__ import annotations

import json
import logging
import os
import subprocess  # nosec B404 - a child process is the crashed invocation
import sys
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from totesys_etl import fanout, lake
from totesys_etl import manifest as manifests
from totesys_etl.errors import ProcessFailed
from totesys_etl.events import part_event, PartRequest
from totesys_etl.process import parts, run
from totesys_etl.logs import StageLog
from totesys_etl.process.handler import lambda_handler
from totesys_etl.schema import source_table

RUN = "20221103T142052186000Z"
PARTS = 3
PER_PART = 4


def _order(i: int) -> dict:
    day = datetime(2022, 1, 1) + timedelta(days=i)
    return {"sales_order_id": i, "design_id": 2, "staff_id": 3, "counterparty_id": 4, "units_sold": i,
            "unit_price": "2.50", "currency_id": 1,
            "agreed_delivery_date": (day + timedelta(days=40)).date().isoformat(),
            "agreed_payment_date": (day + timedelta(days=50)).date().isoformat(),
            "agreed_delivery_location_id": 5, "created_at": day, "last_updated": day}


def _design() -> dict:
    day = datetime(2022, 1, 1)
    return {"design_id": 2, "design_name": "Wooden", "file_location": "/usr", "file_name": "w.json",
            "created_at": day, "last_updated": day}


@pytest.fixture
def write_parted(copy_csv):
    """`write_parted(lake, parted=True, bad_part=None)`: run RUN with sales_order in PARTS parts (or one
    file holding the same rows) and design as one file; `bad_part`'s CSV is not the declared one."""
    def write(target, parted: bool = True, bad_part: int | None = None, design: bool = True) -> None:
        files = {"design": (copy_csv("design", [_design()]), 1)} if design else {}
        rows = [[_order(p * PER_PART + i + 1) for i in range(PER_PART)] for p in range(PARTS)]
        if not parted:
            files["sales_order"] = (copy_csv("sales_order", [r for part in rows for r in part]), PARTS * PER_PART)
            target.write_run(RUN, files)
            return
        entries = []
        for p, part_rows in enumerate(rows):
            key = lake.part_key("sales_order", RUN, "csv", p)
            body = b"not,the,header\n1,2,3\n" * 2 if p == bad_part else copy_csv("sales_order", part_rows)
            target.put(key, body)
            entries.append({"key": key, "rows": PER_PART})
        parted_entry = {**manifests.parted_entry(entries), "columns": source_table("sales_order").column_names}
        target.write_run(RUN, files, extra_entries={"sales_order": parted_entry})
    return write


def _lake_objects(target) -> dict[str, bytes]:
    """Every processed object but the stage's own state (records, marks)."""
    return {k: v for k, v in target.snapshot().items() if not k.startswith("_state/")}


def _handle(target, request: PartRequest) -> dict:
    return lambda_handler(part_event(request), None)


@pytest.fixture
def logs():
    """Every line the package logs during the test: (level, message)."""
    StageLog("test")  # configures the package logger once
    lines: list[tuple[str, str]] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append((record.levelname, record.getMessage()))

    handler = Collect()
    logging.getLogger("totesys_etl").addHandler(handler)
    yield lines
    logging.getLogger("totesys_etl").removeHandler(handler)


@pytest.fixture
def env_of(monkeypatch):
    def use(target) -> None:
        monkeypatch.setenv("TOTESYS_INGEST_BUCKET", target.ingest)
        monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", target.processed)
        monkeypatch.setenv(fanout.WHOLE_RUN_ROWS_VARIABLE, "1")  # fanned out: every run here holds more rows
    return use


def test_a_run_in_parts_is_processed_into_parts_and_holds_what_one_file_would(lake_pair, new_lake, write_parted):
    write_parted(lake_pair)
    result = run.process_run(lake_pair.settings, RUN)
    manifest = lake_pair.manifest(RUN)
    fact = manifest["files"]["fact_sales_order"]
    assert [p["key"] for p in fact["parts"]] == [lake.part_key("fact_sales_order", RUN, "parquet", i)
                                                 for i in range(PARTS)]
    assert fact["rows"] == PARTS * PER_PART == result.rows["fact_sales_order"]
    assert "key" in manifest["files"]["etl_src_design"]  # an unsplit table stays one file
    # The same rows in one file give the same dim_date and, part by part, the same fact rows.
    whole = new_lake()
    write_parted(whole, parted=False)
    run.process_run(whole.settings, RUN)
    assert lake_pair.parquet("dim_date", RUN) == whole.parquet("dim_date", RUN)
    assert lake_pair.parquet("etl_src_design", RUN) == whole.parquet("etl_src_design", RUN)
    joined = pa.concat_tables(pq.read_table(pa.BufferReader(lake_pair.get(p["key"]))) for p in fact["parts"])
    assert joined == whole.parquet("fact_sales_order", RUN)


def test_parts_in_any_order_then_replayed_write_the_manifest_once_when_the_last_is_done(
        lake_pair, new_lake, write_parted, env_of):
    write_parted(lake_pair)
    env_of(lake_pair)
    for part in (2, 0):
        assert _handle(lake_pair, PartRequest(RUN, "sales_order", part))["runs"] == []
        assert not lake.manifest_exists(lake_pair.processed, RUN)
    lambda_handler({}, None)  # the sweep: the unsplit files and the missing part, then the manifest
    assert lake.manifest_exists(lake_pair.processed, RUN)
    done = lake_pair.snapshot()
    for part in (1, 0, 2):  # replays change nothing
        assert _handle(lake_pair, PartRequest(RUN, "sales_order", part))["runs"] == []
    assert lake_pair.snapshot() == done
    clean = new_lake()
    write_parted(clean)
    run.process_run(clean.settings, RUN)
    assert _lake_objects(lake_pair) == _lake_objects(clean)


def test_the_last_part_invocation_finishes_the_run(lake_pair, write_parted, env_of, monkeypatch):
    """The run's own invocation hands the parts to a fan-out that returns at once (as Lambda's)."""
    write_parted(lake_pair, design=False)
    env_of(lake_pair)
    handed: list[PartRequest] = []
    monkeypatch.setattr(fanout, "fan_out", lambda stage, requests, env=None: not handed.extend(requests))
    assert run.process_run(lake_pair.settings, RUN) is None
    assert [r.part for r in handed] == [0, 1, 2] and not lake.manifest_exists(lake_pair.processed, RUN)
    results = [_handle(lake_pair, r)["runs"] for r in reversed(handed)]
    assert results[:2] == [[], []] and results[2][0]["run_id"] == RUN
    assert lake_pair.manifest(RUN)["files"]["fact_sales_order"]["rows"] == PARTS * PER_PART


def test_a_run_within_the_whole_run_rows_is_processed_here_and_fans_nothing_out(
        lake_pair, new_lake, write_parted, env_of, monkeypatch):
    """Parts in parallel pay only where one invocation cannot hold the run (fanout.handles_whole)."""
    write_parted(lake_pair)
    env_of(lake_pair)
    monkeypatch.setenv(fanout.WHOLE_RUN_ROWS_VARIABLE, str(PARTS * PER_PART))
    monkeypatch.setenv("TOTESYS_FANOUT", "lambda")
    fan_out = fanout.fan_out
    monkeypatch.setattr(fanout, "fan_out", lambda *args, **kwargs: pytest.fail("fanned out a run held whole"))
    result = run.process_run(lake_pair.settings, RUN)
    assert result is not None and result.rows["fact_sales_order"] == PARTS * PER_PART
    clean = new_lake()
    write_parted(clean)
    monkeypatch.setattr(fanout, "fan_out", fan_out)
    monkeypatch.delenv("TOTESYS_FANOUT")
    monkeypatch.setenv(fanout.WHOLE_RUN_ROWS_VARIABLE, "1")
    run.process_run(clean.settings, RUN)                 # no fan-out configured: the same parts, by this call
    assert _lake_objects(lake_pair) == _lake_objects(clean)


def test_a_part_request_the_manifest_does_not_name_is_ignored(lake_pair, write_parted, env_of, logs):
    write_parted(lake_pair)
    env_of(lake_pair)
    for request in (PartRequest(RUN, "sales_order", PARTS), PartRequest(RUN, "design", 0),
                    PartRequest(RUN, "address", 0), PartRequest("20221103T142052186001Z", "sales_order", 0)):
        assert _handle(lake_pair, request)["runs"] == []
    assert lake_pair.keys() == []
    assert [level for level, message in logs if "does not name" in message] == ["WARNING"] * 4


def test_a_part_request_for_a_run_whose_manifest_nests_too_deep_is_ignored(lake_pair, env_of, logs):
    """A 50 KB `[[[…` at the run's manifest: json raises RecursionError there, not a ValueError; the
    request is ignored as for any unreadable manifest (the run's own invocation quarantines it)."""
    env_of(lake_pair)
    lake_pair.put(lake.manifest_key(RUN), b"[" * 50_000)
    assert _handle(lake_pair, PartRequest(RUN, "sales_order", 0))["runs"] == []
    assert lake_pair.keys() == []
    assert [level for level, message in logs if "does not name" in message] == ["WARNING"]


@pytest.mark.parametrize("body", [b"[" * 50_000, b"{}".ljust(manifests.MAX_BYTES + 1)], ids=["nested", "too large"])
def test_a_record_that_is_not_this_stage_s_json_fails_the_run_with_one_line(lake_pair, write_parted, body):
    """A part's record nested too deep to decode, or larger than any record: ProcessFailed, never a
    RecursionError or the whole object in memory."""
    write_parted(lake_pair)
    key = parts.record_key(RUN, parts.part_name("sales_order", 1))
    lake_pair.put(key, body, lake_pair.processed)  # as if part 1 had recorded this
    with pytest.raises(ProcessFailed, match=f"^the record {key} is not this stage's JSON$"):
        run.process_run(lake_pair.settings, RUN)
    assert not lake.manifest_exists(lake_pair.processed, RUN)


def test_a_part_that_cannot_be_read_is_quarantined_and_its_processed_part_is_empty(lake_pair, write_parted):
    write_parted(lake_pair, bad_part=1)
    run.process_run(lake_pair.settings, RUN)
    manifest = lake_pair.manifest(RUN)
    assert [p["rows"] for p in manifest["files"]["fact_sales_order"]["parts"]] == [PER_PART, 0, PER_PART]
    assert [q["key"] for q in manifest["quarantined"]] == [lake.part_key("sales_order", RUN, "csv", 1)]


@pytest.mark.slow
def test_a_crash_in_one_part_invocation_then_the_sweep_ends_as_a_clean_run(lake_pair, new_lake, write_parted,
                                                                           scratch_tmp):
    """The local fan-out: the part processes are children; one reaching a crash point ends the
    command with 137 (contract §6). The sweep afterwards finishes the run, as clean."""
    write_parted(lake_pair, design=False)
    env = {**os.environ, "TOTESYS_INGEST_BUCKET": lake_pair.ingest, "TOTESYS_PROCESSED_BUCKET": lake_pair.processed,
           "TOTESYS_FANOUT": "local", "TOTESYS_FANOUT_WORKERS": "1", "TOTESYS_CRASH_AT": "process.before_manifest",
           fanout.WHOLE_RUN_ROWS_VARIABLE: "1"}
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": lake_pair.ingest}, "object": {"key": lake.manifest_key(RUN)}}}]}
    code = ("import json, sys; from totesys_etl.process.handler import lambda_handler; "
            "lambda_handler(json.loads(sys.argv[1]), None)")
    crashed = subprocess.run([sys.executable, "-c", code, json.dumps(event)], env=env, timeout=120)  # nosec B603
    assert crashed.returncode == 137
    assert not lake.manifest_exists(lake_pair.processed, RUN)
    assert lake.part_key("fact_sales_order", RUN, "parquet", 0) in lake_pair.keys()  # written, not recorded
    assert parts.record_key(RUN, parts.part_name("sales_order", 0)) not in lake_pair.keys()
    env.pop("TOTESYS_CRASH_AT")
    swept = subprocess.run([sys.executable, "-c", code, "{}"], env=env, timeout=120)  # nosec B603
    assert swept.returncode == 0
    clean = new_lake()
    write_parted(clean, design=False)
    run.process_run(clean.settings, RUN)
    assert _lake_objects(lake_pair) == _lake_objects(clean)
