"""The load Lambda handler end to end: events, sweeps, the lock, crashes, an unreachable warehouse."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from urllib.parse import quote_plus

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.errors import WarehouseUnavailable
from totesys_etl.load.handler import lambda_handler
from totesys_etl.load.ledger import LOADER_LOCK_KEY, load_mark, loaded_runs
from totesys_etl.load.run import load, warehouse_connection
from totesys_etl.local.services.servers import free_port


def _s3_event(bucket: str, *keys: str) -> dict:
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}}} for key in keys]}


def _two_runs(processed_lake, totesys, kit) -> None:
    processed_lake.write_run(kit.run_id(1), {t: list(rows.values()) for t, rows in totesys.rows.items()})
    processed_lake.write_run(kit.run_id(2), {"address": [totesys.change("address", 1, city="Hull")]})


def test_an_event_loads_its_run_and_an_empty_event_sweeps(load_env, processed_lake, totesys, kit, settings):
    _two_runs(processed_lake, totesys, kit)
    processed = processed_lake.processed

    result = lambda_handler(_s3_event(processed, f"_runs/{kit.run_id(2)}.json"), None)   # '/' arrives as %2F
    assert result["stage"] == "load" and result["status"] == "ok"
    assert [r["run_id"] for r in result["runs"]] == [kit.run_id(2)]
    rows = result["runs"][0]["rows"]
    assert rows.pop("dim_date") > 365 * 6                                 # the calendar seeded on the first load
    assert rows == {"dim_location": 1, "etl_src_address": 1}
    ignored = lambda_handler(_s3_event(processed, "fact_sales_order/x.parquet", "_runs/nonsense.json"), None)
    assert ignored["runs"] == []
    other_bucket = lambda_handler(_s3_event(processed_lake.ingested, f"_runs/{kit.run_id(1)}.json"), None)
    assert other_bucket["runs"] == []
    assert loaded_runs(warehouse_connection(settings)) == {kit.run_id(2)}

    swept = lambda_handler({}, None)
    assert [r["run_id"] for r in swept["runs"]] == [kit.run_id(1)]
    assert load_mark(warehouse_connection(settings)) == kit.run_id(2)
    for event in ({"Event": "s3:TestEvent"}, {"detail-type": "Scheduled Event", "source": "aws.events"}, None):
        assert lambda_handler(event, None)["runs"] == []
    assert lambda_handler(_s3_event(processed, f"_runs/{kit.run_id(1)}.json"), None)["runs"] == []


@pytest.mark.parametrize("wait", ["0", "1"])
def test_a_lock_held_elsewhere_defers_after_the_wait_the_setting_gives(
        load_env, processed_lake, totesys, kit, warehouse_url, monkeypatch, settings, wait):
    """contract §5: TOTESYS_LOCK_WAIT_SECONDS; 0 defers at once (the old code waited forever for 0, and
    the default of 60 s if the setting were ignored: either fails the join below)."""
    _two_runs(processed_lake, totesys, kit)
    monkeypatch.setenv("TOTESYS_LOCK_WAIT_SECONDS", wait)
    holder = pg8000.native.Connection(**parse_url(warehouse_url))
    try:
        holder.run("SELECT pg_advisory_lock(:k)", k=LOADER_LOCK_KEY)
        results = []
        started = time.monotonic()
        loader = threading.Thread(target=lambda: results.append(lambda_handler({}, None)))
        loader.start()
        loader.join(20)
        seconds = time.monotonic() - started
        assert not loader.is_alive(), "the loader waited past its setting"
        assert results[0]["status"] == "deferred" and results[0]["runs"] == []
        assert seconds >= float(wait)
        assert holder.run("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                          "AND pid = pg_backend_pid()") == [[1]]              # deferred while still held
    finally:
        holder.close()                                                    # the lock dies with its session
    assert [r["run_id"] for r in lambda_handler({}, None)["runs"]] == [kit.run_id(1), kit.run_id(2)]


@pytest.mark.parametrize("how", ["closed port", "wrong password"])
def test_an_unreachable_warehouse_is_a_one_line_error_without_the_password(
        load_env, monkeypatch, log_lines, postgres, how):
    password = "S3cret-Pa55word"
    port = free_port() if how == "closed port" else postgres.port
    monkeypatch.setenv("TOTESYS_WAREHOUSE_URL", f"postgresql://postgres:{password}@127.0.0.1:{port}/dw")
    with pytest.raises(WarehouseUnavailable) as raised:
        lambda_handler({}, None)
    message = str(raised.value)
    assert "\n" not in message and password not in message and "127.0.0.1" in message
    errors = [line for line in log_lines if line["level"] == "ERROR"]
    assert [line["error_kind"] for line in errors] == ["warehouse_unavailable"]
    assert all(password not in str(line) for line in log_lines)


def _handler_in_subprocess(env: dict, crash_at: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from totesys_etl.load.handler import lambda_handler; "
                                                 "lambda_handler({}, None)"],
                          env={**os.environ, **env, "TOTESYS_CRASH_AT": crash_at}, capture_output=True, timeout=120)


def test_a_killed_loader_then_a_rerun_equals_a_clean_load(
        load_env, processed_lake, totesys, kit, settings, warehouse_url, fresh_warehouse):
    _two_runs(processed_lake, totesys, kit)
    crashed = _handler_in_subprocess(load_env, "load.before_commit")
    assert crashed.returncode == 137, crashed.stderr.decode()[-2000:]
    assert loaded_runs(warehouse_connection(settings)) == set()
    assert kit.table_rows(warehouse_url, kit.star("fact_sales_order")) == []

    rerun = lambda_handler({}, None)
    assert [r["run_id"] for r in rerun["runs"]] == [kit.run_id(1), kit.run_id(2)]
    clean = fresh_warehouse()
    load(clean, None)
    assert kit.star_snapshot(warehouse_url, with_system=False) == \
        kit.star_snapshot(clean.warehouse.url, with_system=False)


def test_a_loader_killed_after_commit_leaves_nothing_to_redo(
        load_env, processed_lake, totesys, kit, settings, warehouse_url):
    _two_runs(processed_lake, totesys, kit)
    crashed = _handler_in_subprocess(load_env, "load.after_commit")
    assert crashed.returncode == 137
    assert loaded_runs(warehouse_connection(settings)) == {kit.run_id(1)}   # committed, then killed
    before = kit.star_snapshot(warehouse_url)
    rerun = lambda_handler({}, None)
    assert [r["run_id"] for r in rerun["runs"]] == [kit.run_id(2)]
    after = kit.star_snapshot(warehouse_url)
    unchanged = {name for name in before if name not in ("dim_location", "dim_counterparty")}
    assert {name: after[name] for name in unchanged} == {name: before[name] for name in unchanged}
