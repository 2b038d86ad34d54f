"""Change data capture end to end (contract §10): `totesys-etl tick` in cdc mode, as other tools drive
it, over a seeded source read through a slot by a LOGIN REPLICATION role; `reconcile` after each case."""
from __future__ import annotations

import json
import os
import secrets
import signal
import time
from urllib.parse import quote_plus

import boto3
import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.local.source import cdc as cdc_setup

pytestmark = pytest.mark.slow


@pytest.fixture
def new_cdc_pipeline(seeded, new_pipeline):
    """`new_cdc_pipeline(name)`: a pipeline in cdc mode over the seeded source, with a slot and
    replication role of its own (the DBA steps done after `seed` made the tables); the slots go
    at the end. `new_cdc_pipeline.source` is an admin connection to the source."""
    conn = pg8000.native.Connection(**parse_url(seeded.admin_url))
    conn.run("SET synchronous_commit = on")  # decoding reads flushed WAL; the local cluster's is off
    slots = []

    def make(name: str = "cdc"):
        slot, publication = f"e2e_{secrets.token_hex(5)}", f"pub_{secrets.token_hex(5)}"
        cdc_setup.prepare_tables(conn, publication)
        cdc_setup.create_slot(conn, slot)
        slots.append(slot)
        role, password = f"cdc_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
        cdc_setup.grant_cdc_role(conn, seeded.name, password, role)
        admin = parse_url(seeded.admin_url)
        pipeline = new_pipeline(name)
        pipeline.env.update({
            "TOTESYS_SOURCE_URL": f"postgresql://{role}:{password}@{admin['host']}:{admin['port']}/{seeded.name}"
                                  "?sslmode=disable",
            "TOTESYS_SOURCE_MODE": "cdc", "TOTESYS_CDC_SLOT": slot, "TOTESYS_CDC_PUBLICATION": publication})
        return pipeline

    make.source = conn
    yield make
    for slot in slots:
        cdc_setup.drop_slot(conn, slot)
    conn.close()


@pytest.fixture
def cdc_pipeline(new_cdc_pipeline):
    """One pipeline in cdc mode; yields (pipeline, admin connection to the source)."""
    return new_cdc_pipeline(), new_cdc_pipeline.source


def flushed(conn) -> None:
    """Wait until the WAL written so far is flushed (simulate commits asynchronously)."""
    target = conn.run("SELECT pg_current_wal_insert_lsn()::text")[0][0]
    for _ in range(100):
        if conn.run("SELECT pg_current_wal_flush_lsn() >= CAST(:t AS pg_lsn)", t=target)[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError("WAL not flushed within 5 s")


def reconciled(pipeline) -> None:
    result = pipeline.command("reconcile")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def live_ids(pipeline, view: str, key: str) -> set[int]:
    return {r[0] for r in pipeline_sql(pipeline, f"SELECT {key} FROM analytics.{view}")}


def pipeline_sql(pipeline, statement: str, **params):
    conn = pg8000.native.Connection(**parse_url(pipeline.warehouse_url))
    try:
        return conn.run(statement, **params)
    finally:
        conn.close()


def test_deletes_reinserts_and_an_unchanged_300_kb_value_through_tick(cdc_pipeline, seeded):
    pipeline, source = cdc_pipeline
    pipeline.tick()
    reconciled(pipeline)
    # A long transaction of 300 subtransactions, a third rolled back, open across a tick: it arrives
    # whole, once, with the tick after its commit.
    long = pg8000.native.Connection(**parse_url(seeded.admin_url))
    long.run("SET synchronous_commit = on")
    long.run("BEGIN")
    for i in range(300):
        long.run(f"SAVEPOINT s{i}")
        long.run("UPDATE address SET city = :c, last_updated = clock_timestamp() WHERE address_id = :id",
                 c=f"long {i}", id=1 + i % 20)
        if i % 3 == 2:
            long.run(f"ROLLBACK TO SAVEPOINT s{i}")
    pipeline.tick()
    assert not [r for r in pipeline_sql(pipeline, "SELECT city FROM dim_location") if r[0].startswith("long")]
    long.run("COMMIT")
    long.close()
    flushed(source)
    pipeline.tick()
    reconciled(pipeline)
    assert pipeline_sql(pipeline, "SELECT city FROM dim_location WHERE location_id = 1") == [["long 280"]]
    paid = source.run("SELECT max(payment_id) FROM payment")[0][0]
    row = source.run("SELECT * FROM payment WHERE payment_id = :id", id=paid)[0]
    columns = [c["name"] for c in source.columns]
    big = os.urandom(150_000).hex()
    source.run("UPDATE design SET file_location = :big WHERE design_id = 1", big=big)
    assert pipeline.command("simulate", "--changes", "100").returncode == 0
    source.run("DELETE FROM payment WHERE payment_id = :id", id=paid)
    flushed(source)
    pipeline.tick()
    source.run("UPDATE design SET design_name = 'renamed', last_updated = now() WHERE design_id = 1")
    flushed(source)
    pipeline.tick()
    reconciled(pipeline)
    assert pipeline_sql(pipeline, "SELECT source_table, source_id FROM etl_deleted_row") == [["payment", paid]]
    assert paid not in live_ids(pipeline, "current_payment", "payment_id")
    assert pipeline_sql(pipeline, "SELECT design_name, file_location FROM dim_design WHERE design_id = 1") \
        == [["renamed", big]]

    placeholders = ", ".join(f":c{i}" for i in range(len(columns)))
    source.run(f"INSERT INTO payment ({', '.join(columns)}) VALUES ({placeholders})",  # nosec B608 - its own names
               **{f"c{i}": v for i, v in enumerate(row)})
    source.run("UPDATE payment SET last_updated = now() WHERE payment_id = :id", id=paid)
    flushed(source)
    pipeline.tick()
    reconciled(pipeline)
    assert paid in live_ids(pipeline, "current_payment", "payment_id")  # current again
    before = pipeline.digest()
    pipeline.tick()  # nothing changed: no star row moves
    assert pipeline.digest() == before
    shown = pipeline.command("status", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["cdc_slot"]["wal_status"] == "reserved"


def test_a_lost_slot_stops_tick_with_one_line_and_a_new_slot_catches_up(cdc_pipeline):
    pipeline, source = cdc_pipeline
    slot = pipeline.env["TOTESYS_CDC_SLOT"]
    pipeline.tick()
    cdc_setup.drop_slot(source, slot)
    source.run("DELETE FROM payment WHERE payment_id = (SELECT min(payment_id) FROM payment)")
    assert pipeline.command("simulate", "--changes", "40").returncode == 0
    stopped = pipeline.tick(expect=1)
    assert f"replication slot {slot} does not exist" in stopped.stderr + stopped.stdout
    cdc_setup.create_slot(source, slot)
    pipeline.tick()
    reconciled(pipeline)  # the snapshot brought the changes, and the delete it could not see
    assert pipeline_sql(pipeline, "SELECT count(*) FROM etl_deleted_row") == [[1]]


#: Every fault point of contract §6 (faults.py), in stage order.
POINTS = ("ingest.before_manifest", "ingest.after_manifest", "process.before_manifest", "process.after_manifest",
          "load.before_commit", "load.after_commit")


def test_a_crash_at_each_point_then_a_rerun_equals_a_clean_run_and_the_oracle(new_cdc_pipeline, compare, tally,
                                                                              at_once):
    """Six cdc pipelines, each crashed at one point of a tick after the first load, then rerun: each
    warehouse equals a clean cdc pipeline's and what the independent oracle computes (test/oracle.py,
    which knows no deletes); then a delete, the same crashes again, and reconcile clean with the
    delete recorded once."""
    source = new_cdc_pipeline.source
    faulted = {point: new_cdc_pipeline(f"f{i}") for i, point in enumerate(POINTS)}
    clean = new_cdc_pipeline("c")
    at_once(clean.tick, *[p.tick for p in faulted.values()])
    for round_, delete in ((1, False), (2, True)):
        assert clean.command("simulate", "--changes", "50").returncode == 0
        if delete:
            source.run("DELETE FROM payment WHERE payment_id = (SELECT min(payment_id) FROM payment)")
        flushed(source)
        # The clean pipeline ticks only where it is compared with (the first round): the second
        # round's six crashes then take two turns of `at_once`'s three workers, not three.
        at_once(*([] if delete else [clean.tick]), *[_crash(p, point) for point, p in faulted.items()])
        for point in POINTS:
            tally.fault(f"cdc: crash at {point}")
        at_once(*[p.tick for p in faulted.values()])
        if not delete:
            clean_rows = clean.rows()
            for point, pipeline in faulted.items():
                compare(f"cdc: crash at {point}", pipeline, clean, clean_rows=clean_rows)
    # Each pipeline's reconcile reads only its own warehouse and the shared source: side by side.
    reports = at_once(*[lambda p=p: p.command("reconcile") for p in faulted.values()])
    for (point, pipeline), result in zip(faulted.items(), reports):
        assert result.returncode == 0, (point, result.stdout[-3000:])
        assert pipeline_sql(pipeline, "SELECT count(*) FROM etl_deleted_row") == [[1]], point


def _crash(pipeline, point):
    return lambda: pipeline.tick(extra={"TOTESYS_CRASH_AT": point}, expect=137)


def test_switching_poll_to_cdc_and_back_loses_nothing(cdc_pipeline, seeded):
    """poll -> cdc -> poll on one lake and warehouse: every change arrives and reconcile stays clean.
    (The first run after each switch reads every row again: the lake holds those versions twice,
    the warehouse once; readme_files/cdc.md says what remains to be built.)"""
    pipeline, source = cdc_pipeline
    cdc_env = {k: pipeline.env[k] for k in ("TOTESYS_SOURCE_URL", "TOTESYS_SOURCE_MODE")}
    poll = {"TOTESYS_SOURCE_URL": seeded.reader_url, "TOTESYS_SOURCE_MODE": "poll"}
    pipeline.tick(extra=poll)
    for mode in (cdc_env, poll, cdc_env):
        assert pipeline.command("simulate", "--changes", "60").returncode == 0
        if mode is cdc_env:  # a row the warehouse holds, deleted (poll mode reads no deletes)
            source.run("DELETE FROM payment WHERE payment_id = (SELECT min(payment_id) FROM payment)")
        flushed(source)
        pipeline.tick(extra=mode)
        reconciled(pipeline)
    assert pipeline.command("simulate", "--changes", "60").returncode == 0
    flushed(source)
    pipeline.tick(extra=cdc_env)
    reconciled(pipeline)
    runs = [json.loads(boto3.client("s3").get_object(Bucket=pipeline.ingest_bucket, Key=key)["Body"].read())
            for key in pipeline.manifests(pipeline.ingest_bucket)]
    switches = [m for i, m in enumerate(runs) if i == 0 or m.get("source_mode", "poll") !=
                runs[i - 1].get("source_mode", "poll")]
    assert [m.get("source_mode", "poll") for m in switches] == ["poll", "cdc", "poll", "cdc"]
    # Each switch is one announced full read ("read again on purpose" in reconcile, which is clean:
    # no other run shipped a row twice), and only the switch is.
    assert [m["read"] for m in switches] == ["first", "snapshot", "first", "snapshot"]
    assert [m["read"] for m in runs if m not in switches] == ["changes"] * (len(runs) - 4)
    assert len(pipeline_sql(pipeline, "SELECT * FROM etl_deleted_row")) == 2


def _event(bucket: str, run_id: str) -> dict:
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(lake.manifest_key(run_id))}}}]}


def test_replayed_events_sigkills_and_two_ticks_at_once_change_nothing_twice(cdc_pipeline, open_gates, at_once):
    pipeline, source = cdc_pipeline
    pipeline.tick()
    for delay in (0.2, 0.6, 1.2):  # killed wherever the tick is by then; the rerun finishes its work
        assert pipeline.command("simulate", "--changes", "40").returncode == 0
        source.run("DELETE FROM payment WHERE payment_id = (SELECT min(payment_id) FROM payment)")
        flushed(source)
        killed = pipeline.start("tick")
        time.sleep(delay)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        pipeline.tick()
        reconciled(pipeline)
    assert pipeline_sql(pipeline, "SELECT count(*) FROM etl_deleted_row") == [[3]]
    # Two ticks at once: the CDC ingests take turns (an advisory lock), so their LSN ranges meet.
    assert pipeline.command("simulate", "--changes", "40").returncode == 0
    flushed(source)
    at_once(pipeline.tick, pipeline.tick)
    reconciled(pipeline)
    last = [json.loads(boto3.client("s3").get_object(Bucket=pipeline.ingest_bucket, Key=key)["Body"].read())
            for key in pipeline.manifests(pipeline.ingest_bucket)[-2:]]
    assert last[1]["lsn_from"] == last[0]["lsn_to"] and last[1]["previous_run_id"] == last[0]["run_id"]
    before = pipeline.digest()
    for stage, bucket in (("process", pipeline.ingest_bucket), ("load", pipeline.processed_bucket)):
        for run_id in pipeline.run_ids(bucket):
            handler = pipeline.start_handler(stage, _event(bucket, run_id))
            open_gates(handler)
            out, err = handler.communicate(timeout=120)
            assert handler.returncode == 0, err[-2000:]
    assert pipeline.digest() == before  # not a row, surrogate key or etl_ column moved
    reconciled(pipeline)


def test_a_dropped_column_stops_that_table_and_it_catches_up_once_back(cdc_pipeline, json_errors):
    """Contract §2/§10 through tick: the table whose column went is not compared (reconcile says why),
    every other table keeps loading, and once the column is back the table catches up: reconcile clean,
    and the copy that resumed it is a read on purpose, not a reship."""
    pipeline, source = cdc_pipeline
    pipeline.tick()
    emails = source.run("SELECT staff_id, email_address FROM staff")
    source.run("ALTER TABLE staff DROP COLUMN email_address")
    assert pipeline.command("simulate", "--changes", "60").returncode == 0
    source.run("UPDATE staff SET first_name = 'while stopped', last_updated = now() WHERE staff_id = 1")
    source.run("DELETE FROM payment WHERE payment_id = (SELECT min(payment_id) FROM payment)")
    flushed(source)
    stopped = pipeline.tick(extra={"TOTESYS_LOG_LEVEL": "ERROR"})
    errors = json_errors(stopped.stderr)
    assert [(e["error_kind"], e["table"], e["columns"]) for e in errors] \
        == [("source_schema_changed", "staff", ["email_address"])], errors  # one ERROR, and only it
    report = pipeline.command("reconcile")
    assert report.returncode == 1 and "staff" in report.stdout and "STOPPED" in report.stdout
    assert "DIFFERENT" not in report.stdout, report.stdout[-3000:]  # every other table loaded
    assert "source columns: staff stopped, lacking email_address" in pipeline.command("status").stdout
    source.run("ALTER TABLE staff ADD COLUMN email_address varchar")
    for staff_id, email in emails:
        source.run("UPDATE staff SET email_address = :e WHERE staff_id = :i", e=email, i=staff_id)
    flushed(source)
    pipeline.tick()
    source.run("UPDATE staff SET last_name = 'after', last_updated = now() WHERE staff_id = 2")
    flushed(source)
    pipeline.tick()
    reconciled(pipeline)
    assert pipeline_sql(pipeline, "SELECT first_name FROM dim_staff WHERE staff_id = 1") == [["while stopped"]]
    assert pipeline_sql(pipeline, "SELECT count(*) FROM etl_deleted_row") == [[1]]
