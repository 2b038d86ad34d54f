"""The processor's Lambda entry point, driven by the events AWS sends (test/events/), on moto's S3."""
import json
import os
import subprocess  # nosec B404 - crash points end a process; only a child process can show it
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from totesys_etl import lake
from totesys_etl.errors import ConfigurationError
from totesys_etl.process import run
from totesys_etl.process.handler import lambda_handler

RUN_A = "20221103T142052186000Z"
RUN_B = "20221104T090102500000Z"
STAMP = "2022-11-03 14:20:52.186"
EVENTS = Path(__file__).parent.parent / "events"

CURRENCIES = [{"currency_id": i, "currency_code": code, "created_at": STAMP, "last_updated": STAMP}
              for i, code in enumerate(["GBP", "USD", "EUR"], start=1)]
ORDER = {"sales_order_id": 1, "design_id": 1, "staff_id": 1, "counterparty_id": 1, "units_sold": 3,
         "unit_price": "2.50", "currency_id": 1, "agreed_delivery_date": "2022-11-10",
         "agreed_payment_date": "2022-11-11", "agreed_delivery_location_id": 1, "created_at": STAMP,
         "last_updated": STAMP}


def event(name: str, bucket: str = "", run_id: str = "", key: str | None = None) -> dict:
    document = json.loads((EVENTS / name).read_text().replace("BUCKET", bucket).replace("RUN_ID", run_id))
    if key is not None:
        document["Records"][0]["s3"]["object"]["key"] = key
    return document


def manifest_event(bucket: str, run_id: str) -> dict:
    return event("s3_object_created_manifest.json", bucket, run_id)


@pytest.fixture
def env(lake_pair, monkeypatch):
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", lake_pair.ingest)
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", lake_pair.processed)
    return lake_pair


def write_runs(target, copy_csv, *run_ids):
    files = {"currency": (copy_csv("currency", CURRENCIES), 3),
             "sales_order": (copy_csv("sales_order", [ORDER]), 1)}
    for run_id in run_ids:
        target.write_run(run_id, files)


def test_a_manifest_event_with_an_encoded_key_processes_its_run(env, copy_csv):
    write_runs(env, copy_csv, RUN_A, RUN_B)
    document = manifest_event(env.ingest, RUN_A)
    assert document["Records"][0]["s3"]["object"]["key"] == f"_runs%2F{RUN_A}.json"

    result = lambda_handler(document, None)
    assert set(result) == {"stage", "status", "runs", "seconds"}
    assert (result["stage"], result["status"]) == ("process", "ok")
    [summary] = result["runs"]
    assert set(summary) == {"run_id", "rows", "files", "quarantined", "seconds"}
    assert summary["run_id"] == RUN_A and summary["quarantined"] == 0
    assert summary["rows"] == {"etl_src_currency": 3, "fact_sales_order": 1, "dim_date": 3}
    assert lake.manifest_exists(env.processed, RUN_A)
    assert not lake.manifest_exists(env.processed, RUN_B)      # an event processes only its run


@pytest.mark.parametrize("key", [
    lake.table_key("currency", RUN_A, "csv"), "_runs/not-a-run.json", f"_runs/{RUN_A}.json.tmp",
    f"_state/ingest_index/{lake.newest_first(RUN_A)}.json", f"x/_runs/{RUN_A}.json"])
def test_objects_that_are_not_run_manifests_are_ignored(env, copy_csv, key):
    write_runs(env, copy_csv, RUN_A)
    result = lambda_handler(event("s3_object_created_manifest.json", env.ingest, RUN_A, key=key))
    assert result["runs"] == []
    assert env.keys() == []


def test_a_manifest_of_another_bucket_is_ignored(env, copy_csv):
    write_runs(env, copy_csv, RUN_A)
    env.put(lake.manifest_key(RUN_A), b"{}", bucket=env.processed)
    assert lambda_handler(manifest_event(env.processed, RUN_A))["runs"] == []
    assert env.keys() == [lake.manifest_key(RUN_A)]


@pytest.mark.parametrize("sweep_event", [
    {}, None, event("s3_test_event.json", "any-bucket"), event("eventbridge_scheduled.json")])
def test_events_without_records_sweep(env, copy_csv, sweep_event):
    write_runs(env, copy_csv, RUN_A, RUN_B)
    result = lambda_handler(sweep_event)
    assert [r["run_id"] for r in result["runs"]] == [RUN_A, RUN_B]
    assert lake.read_mark(env.processed, run.MARK_PREFIX) == RUN_B
    assert lambda_handler(sweep_event)["runs"] == []


def test_replayed_and_out_of_order_events_give_the_same_output(env, new_lake, copy_csv):
    clean = new_lake()
    for target in (env, clean):
        write_runs(target, copy_csv, RUN_A, RUN_B)
    run.process_run(clean.settings, RUN_A)
    run.process_run(clean.settings, RUN_B)

    assert [r["run_id"] for r in lambda_handler(manifest_event(env.ingest, RUN_B))["runs"]] == [RUN_B]
    assert lambda_handler(manifest_event(env.ingest, RUN_B))["runs"] == []
    assert [r["run_id"] for r in lambda_handler(manifest_event(env.ingest, RUN_A))["runs"]] == [RUN_A]
    assert lambda_handler(manifest_event(env.ingest, RUN_A))["runs"] == []
    assert env.snapshot() == clean.snapshot()


def test_missing_settings_fail_the_call():
    with pytest.raises(ConfigurationError):
        lambda_handler({})


def invoke_in_child(document, **env) -> subprocess.CompletedProcess:
    """The handler in its own process, as Lambda runs it: a crash point there ends only that process."""
    script = ("import json, sys\nfrom totesys_etl.process.handler import lambda_handler\n"
              "print(json.dumps(lambda_handler(json.loads(sys.argv[1]))))")
    return subprocess.run([sys.executable, "-c", script, json.dumps(document)],  # nosec B603
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("point", ["process.before_manifest", "process.after_manifest"])
def test_a_crash_then_a_rerun_completes_the_run(env, new_lake, copy_csv, point):
    clean = new_lake()
    for target in (env, clean):
        write_runs(target, copy_csv, RUN_A)
    run.process_run(clean.settings, RUN_A)

    crashed = invoke_in_child(manifest_event(env.ingest, RUN_A), TOTESYS_CRASH_AT=point)
    assert crashed.returncode == 137, crashed.stderr
    parquet = [k for k in env.keys() if k.endswith(".parquet")]
    if point == "process.before_manifest":
        assert 1 <= len(parquet) < 3 and not lake.manifest_exists(env.processed, RUN_A)  # dim_date: last
    else:
        assert len(parquet) == 3 and lake.manifest_exists(env.processed, RUN_A)

    rerun = lambda_handler({})
    assert [r["run_id"] for r in rerun["runs"]] == ([RUN_A] if point == "process.before_manifest" else [])
    assert lake.read_mark(env.processed, run.MARK_PREFIX) == RUN_A
    assert {k: v for k, v in env.snapshot().items() if not k.startswith("_state/")} == clean.snapshot()


def test_a_failure_raises_after_an_error_line_with_its_kind(env, copy_csv):
    write_runs(env, copy_csv, RUN_A)
    failed = invoke_in_child(manifest_event(env.ingest, RUN_A), TOTESYS_PROCESSED_BUCKET="no-such-bucket")
    assert failed.returncode == 1
    lines = [json.loads(line) for line in failed.stderr.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1  # counted once, under its own kind (not again as process_failed)
    assert errors[0]["error_kind"] == "lake_unavailable" and errors[0]["run_id"] == RUN_A
    assert errors[0]["stage"] == "process"
    assert "Traceback" in failed.stderr


def test_the_processor_allocates_arrow_memory_with_jemalloc_not_mimalloc(env):
    """Arrow's default pool (mimalloc) took fresh huge pages from the kernel for each thread: up to 0.4 s
    more kernel CPU per first load at 100,000 orders (readme_files/benchmarks.md). The choice is made
    when the handler's module loads, as Lambda's init phase does, for the whole process."""
    script = ("import pyarrow\nimport totesys_etl.process.handler\n"
              "print(pyarrow.default_memory_pool().backend_name)")
    child = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True,  # nosec B603
                           text=True, timeout=120, check=True)
    try:
        pa.jemalloc_memory_pool()
        expected = "jemalloc"
    except NotImplementedError:  # a pyarrow built without it
        expected = "system"
    assert child.stdout.split() == [expected]
