"""Clocks, zones and schema changes on a source that runs for years (contract §2): run order never
comes from a clock that can step, a change arrives within one schedule interval whatever zone its
writer stamps in, and a dropped column stops only the tables that need it."""
from __future__ import annotations

import pytest

from totesys_etl import lake
from totesys_etl.config import Settings
from totesys_etl.ingest.run import ingest
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
