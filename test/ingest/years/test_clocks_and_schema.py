"""Clocks, zones and schema changes on a source that runs for years (contract §2): run order never
comes from a clock that can step, a change arrives within one schedule interval whatever zone its
writer stamps in, and a dropped column stops only the tables that need it."""
from __future__ import annotations

import os
import secrets

import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.cli import main
from totesys_etl.config import Settings
from totesys_etl.ingest.cdc import run as cdc_run
from totesys_etl.ingest.run import ingest
from totesys_etl.load.handler import lambda_handler as load_handler
from totesys_etl.local.services import admin
from totesys_etl.local.source import cdc as cdc_setup
from totesys_etl.local.source.seed import seed
from totesys_etl.process.run import process_run
from totesys_etl.schema import SOURCE_TABLES


def run():
    return ingest(Settings.from_env())


def ids(shipped, result) -> dict[str, list[str]]:
    return {t: [r[f"{t}_id"] for r in rows] for t, rows in shipped(result).items()}


@pytest.mark.slow
def test_a_source_clock_stepped_back_keeps_run_order_and_the_change_arrives_at_once(clocked_source, shipped,
                                                                                    versions, logs):
    """Issue 34.5: the source's clock steps back 30 minutes (NTP, a failover) between two runs. The
    next run sorts after the previous one (the loader keeps the latest run's version), and a change
    stamped by the stepped clock arrives with it, not an hour later."""
    first = run()
    clocked_source.step_clock("-30m")
    assert clocked_source.run("SELECT now() < CAST(:t AS timestamptz)", t=lake.run_time(first.run_id))[0][0]
    clocked_source.run("UPDATE staff SET first_name = 'Stepped', last_updated = LOCALTIMESTAMP WHERE staff_id = 1")
    second = run()
    assert second.run_id > first.run_id
    assert ids(shipped, second) == {"staff": ["1"]}
    clocked_source.run("UPDATE staff SET first_name = 'Stepped again', last_updated = LOCALTIMESTAMP "
                       "WHERE staff_id = 1")
    third = run()
    assert third.run_id > second.run_id and ids(shipped, third) == {"staff": ["1"]}
    assert run().files == 0
    assert max(versions([first, second, third]).values()) == 1
    assert any("clock" in line["message"] for line in logs if line["level"] == "WARNING")


def test_writers_stamping_in_another_zone_are_read_by_the_next_run(totesys, pipeline_env, shipped, versions):
    """Issue 34.6: application sessions stamp `last_updated` in America/New_York, the reader and the
    server run in UTC: a change looks five hours old, and still arrives with the next run (not the
    hourly scan by transaction id)."""
    first = run()
    run()  # nothing in progress at the previous run: the next one reads recent stamps only
    writer = totesys.conn
    writer.run("SET TIME ZONE 'America/New_York'")
    writer.run("UPDATE address SET city = 'New York time', last_updated = LOCALTIMESTAMP WHERE address_id = 2")
    writer.run("SET TIME ZONE 'UTC'")
    after = run()
    assert [(r["address_id"], r["city"]) for r in shipped(after)["address"]] == [("2", "New York time")]
    assert run().files == 0
    assert max(versions([first, after]).values()) == 1


def test_a_dropped_column_stops_only_its_table_and_it_catches_up_once_the_column_is_back(
        totesys, pipeline_env, ingested, shipped, versions, logs):
    """Issue 34.7: a column the pipeline reads is dropped. Only its table stops, with one ERROR
    (`source_schema_changed`, naming table and column) per run; every other table keeps loading; the
    table's changes made meanwhile arrive once the column is back. A new column is ignored and recorded."""
    first = run()
    totesys.run("ALTER TABLE staff DROP COLUMN email_address")
    totesys.run("UPDATE staff SET first_name = 'While stopped', last_updated = LOCALTIMESTAMP WHERE staff_id = 1")
    totesys.run("UPDATE address SET city = 'Goes on', last_updated = LOCALTIMESTAMP WHERE address_id = 1")
    totesys.run("ALTER TABLE design ADD COLUMN colour text")
    stopped = run()
    assert ids(shipped, stopped) == {"address": ["1"]}
    errors = [line for line in logs if line["level"] == "ERROR"]
    assert [(e["error_kind"], e["table"], e["columns"]) for e in errors] == [
        ("source_schema_changed", "staff", ["email_address"])]
    manifest = ingested.manifest(stopped.run_id)
    assert manifest["new_columns"] == {"design": ["colour"]} and list(manifest["stopped"]) == ["staff"]
    totesys.run("UPDATE staff SET first_name = 'Still stopped', last_updated = LOCALTIMESTAMP - interval '2 days' "
                "WHERE staff_id = 2")
    totesys.run("UPDATE currency SET currency_code = 'EUR', last_updated = LOCALTIMESTAMP WHERE currency_id = 1")
    still = run()
    assert ids(shipped, still) == {"currency": ["1"]} and len([e for e in logs if e["level"] == "ERROR"]) == 2
    totesys.run("ALTER TABLE staff ADD COLUMN email_address varchar")
    back = run()
    assert sorted(ids(shipped, back)["staff"]) == ["1", "2"]  # what changed while it was stopped, once
    assert "stopped" not in ingested.manifest(back.run_id)
    assert run().files == 0
    counted = versions([first, stopped, still, back])
    assert max(counted.values()) == 1
    staff_now = {r["staff_id"]: r["first_name"] for r in shipped(back)["staff"]}
    assert staff_now["1"] == "While stopped" and staff_now["2"] == "Still stopped"
    assert all(r.rows.keys() == {t.name for t in SOURCE_TABLES} for r in (stopped, still, back))


@pytest.mark.slow
def test_a_daylight_saving_fall_back_with_an_open_transaction_ships_every_version_once(clocked_source, shipped,
                                                                                       versions):
    """Issue 34.6: the server runs in America/New_York, whose clocks fall back from 02:00 EDT to 01:00
    EST (06:00 UTC) on 2026-11-01. A transaction open across the change and writes on both sides of
    it: every version arrives with the run after it commits, and none twice."""
    clocked_source.run("ALTER DATABASE totesys SET timezone = 'America/New_York'")
    clocked_source.step_clock("@2026-11-01 05:40:00")  # 01:40 EDT
    first = run()
    open_across = clocked_source.admin()
    try:
        open_across.run("BEGIN")
        open_across.run("UPDATE staff SET first_name = 'Before the change', last_updated = LOCALTIMESTAMP "
                        "WHERE staff_id = 1")
        clocked_source.run("UPDATE address SET city = 'EDT', last_updated = LOCALTIMESTAMP WHERE address_id = 1")
        during = run()
        clocked_source.step_clock("@2026-11-01 06:10:00")  # 01:10 EST: local stamps go back 50 minutes
        clocked_source.run("UPDATE address SET city = 'EST', last_updated = LOCALTIMESTAMP WHERE address_id = 2")
        open_across.run("UPDATE staff SET first_name = 'After the change', last_updated = LOCALTIMESTAMP "
                        "WHERE staff_id = 2")
        after_change = run()
        open_across.run("COMMIT")
    finally:
        open_across.close()
    after_commit = run()
    quiet = run()
    assert ids(shipped, during) == {"address": ["1"]} and ids(shipped, after_change) == {"address": ["2"]}
    assert sorted(ids(shipped, after_commit)["staff"]) == ["1", "2"] and quiet.files == 0
    assert first.run_id < during.run_id < after_change.run_id < after_commit.run_id < quiet.run_id
    assert max(versions([first, during, after_change, after_commit, quiet]).values()) == 1


def _both_modes(source, warehouse_url, monkeypatch) -> dict[str, dict[str, str]]:
    """The clocked source seeded, with the DBA steps of cdc mode done (publication, slot, replication
    role), and a warehouse: the environment of each mode (`totesys-etl tick` switches on these two)."""
    monkeypatch.setenv("TOTESYS_WAREHOUSE_URL", warehouse_url)
    seed(source.admin_url, orders=12, seed=5)
    source.run("ALTER DATABASE totesys SET synchronous_commit = on")  # decoding reads flushed WAL
    slot, publication = f"years_{secrets.token_hex(5)}", f"pub_{secrets.token_hex(5)}"
    role, password = f"cdc_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    conn = source.admin()
    try:
        cdc_setup.prepare_tables(conn, publication)
        cdc_setup.create_slot(conn, slot)
        cdc_setup.grant_cdc_role(conn, "totesys", password, role)
    finally:
        conn.close()
    monkeypatch.setenv("TOTESYS_CDC_SLOT", slot)
    monkeypatch.setenv("TOTESYS_CDC_PUBLICATION", publication)
    cdc_url = source.reader_url.replace(f"{admin.READER_ROLE}:{source.reader_password}@", f"{role}:{password}@")
    return {"poll": {"TOTESYS_SOURCE_URL": source.reader_url, "TOTESYS_SOURCE_MODE": "poll"},
            "cdc": {"TOTESYS_SOURCE_URL": cdc_url, "TOTESYS_SOURCE_MODE": "cdc"}}


def _tick(monkeypatch, env: dict[str, str]) -> str:
    """One ingest in the mode `env` names, then the real processor and loader over it: the run's id."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    result = cdc_run.ingest(settings) if env["TOTESYS_SOURCE_MODE"] == "cdc" else ingest(settings)
    process_run(settings, result.run_id)
    load_handler({}, None)
    return result.run_id


def _reconciled(capsys) -> None:
    capsys.readouterr()
    code = main(["reconcile"])
    assert code == 0, capsys.readouterr().out[-3000:]


def _staff_name(warehouse_url: str, staff_id: int) -> str:
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    try:
        return conn.run("SELECT first_name FROM dim_staff WHERE staff_id = :id", id=staff_id)[0][0]
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [("poll", "cdc"), ("cdc", "poll"), ("cdc", "recreated slot")])
def test_the_run_after_a_switch_of_mode_sorts_after_every_run_whatever_the_clock_did(
        clocked_source, warehouse_url, monkeypatch, capsys, ingested, before, after):
    """The source's clock steps back 30 minutes, more than the time since the last run, and then the
    mode is switched (or the slot recreated): the next run is a full read in the other mode. It still
    sorts after the last run (the loader keeps the version of the latest run id: ADR 0002), so the
    warehouse takes what it read: the changed staff row and order, not the previous run's versions."""
    modes = _both_modes(clocked_source, warehouse_url, monkeypatch)
    modes["recreated slot"] = modes["cdc"]
    last = _tick(monkeypatch, modes[before])
    _reconciled(capsys)
    clocked_source.step_clock("-30m")
    assert clocked_source.run("SELECT now() < CAST(:t AS timestamptz)", t=lake.run_time(last))[0][0]
    clocked_source.run("UPDATE staff SET first_name = 'Stepped', last_updated = LOCALTIMESTAMP WHERE staff_id = 1")
    clocked_source.run("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = LOCALTIMESTAMP "
                       "WHERE sales_order_id = 1")
    if after == "recreated slot":
        conn = clocked_source.admin()
        try:
            cdc_setup.drop_slot(conn, os.environ["TOTESYS_CDC_SLOT"])
            cdc_setup.create_slot(conn, os.environ["TOTESYS_CDC_SLOT"])
        finally:
            conn.close()
    switched = _tick(monkeypatch, modes[after])
    assert ingested.manifest(switched)["read"] in ("first", "snapshot")  # a full read, as a switch makes
    assert _staff_name(warehouse_url, 1) == "Stepped"
    _reconciled(capsys)  # the order's current version too
    assert switched > last
