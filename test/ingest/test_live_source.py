"""The ingest against a source that behaves like a live database (issue 21, contract §3 "Incremental",
"Old stamps still arrive"): transactions that stay open, old stamps committed late, run-id collisions.

Every test reads the source as the read-only role and checks what each run *shipped* (its CSVs),
since shipping a version twice is as wrong here as losing one.
"""
from __future__ import annotations

import csv
import io
import random
import threading
from datetime import datetime, timezone

import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.config import Settings
from totesys_etl.errors import RunIdCollision
from totesys_etl.ingest import extract
from totesys_etl.ingest import run as ingest_run
from totesys_etl.ingest.run import ingest
from totesys_etl.runs import RunResult
from totesys_etl.schema import SOURCE_TABLES


def run() -> RunResult:
    return ingest(Settings.from_env())


def shipped(ingested, result: RunResult) -> dict[str, list[dict]]:
    """Table -> the rows the run's CSVs hold."""
    rows = {}
    for table, entry in ingested.manifest(result.run_id)["files"].items():
        body = ingested.body(entry["key"]).decode("utf-8")
        rows[table] = list(csv.DictReader(io.StringIO(body, newline="")))
    return rows


def session(source) -> pg8000.native.Connection:
    return pg8000.native.Connection(**parse_url(source.admin_url))


def test_a_transaction_holding_an_id_for_hours_does_not_make_runs_ship_versions_again(
        totesys, source, pipeline_env, ingested):
    run()
    idle = session(source)
    try:
        idle.run("BEGIN")
        idle.run("UPDATE design SET design_name = 'Held' WHERE design_id = 1")  # holds an xid, stays open
        totesys.run("UPDATE address SET city = 'Moved', last_updated = LOCALTIMESTAMP WHERE address_id = 2")
        first = run()
        assert [(r["address_id"], r["city"]) for r in shipped(ingested, first)["address"]] == [("2", "Moved")]
        quiet = [run(), run()]  # nothing committed since: no table file, however long `idle` stays open
        assert [r.files for r in quiet] == [0, 0]
        totesys.run("UPDATE staff SET first_name = 'New', last_updated = LOCALTIMESTAMP WHERE staff_id = 3")
        one_more = run()
        assert {t: [r[f"{t}_id"] for r in rows] for t, rows in shipped(ingested, one_more).items()} == {
            "staff": ["3"]}
        idle.run("COMMIT")
    finally:
        idle.close()
    after = run()
    assert {t: [(r["design_id"], r["design_name"]) for r in rows] for t, rows in shipped(ingested, after).items()} \
        == {"design": [("1", "Held")]}
    assert run().files == 0


def _old_stamp_committed_late(totesys, source) -> None:
    """A transaction with no xid at the previous run (it had only read) writes a stamp twenty hours
    old and commits: outside any window, unknown to the previous snapshot."""
    late = session(source)
    try:
        late.run("BEGIN")
        late.run("SELECT count(*) FROM address")
        late.run("UPDATE address SET city = 'Old stamp', last_updated = LOCALTIMESTAMP - interval '20 hours' "
                 "WHERE address_id = 3")
        late.run("COMMIT")
    finally:
        late.close()


def test_an_old_stamp_committed_late_arrives_with_the_next_scan_by_transaction_id(
        totesys, source, pipeline_env, ingested, monkeypatch):
    run()
    run()  # the previous run had nothing in progress: the next one reads by stamp only
    _old_stamp_committed_late(totesys, source)
    between_scans = run()
    assert between_scans.files == 0  # a cheap run between scans: recent stamps only
    monkeypatch.setenv("TOTESYS_FULL_RESCAN_SECONDS", "0")
    scan = run()
    assert [(r["address_id"], r["city"]) for r in shipped(ingested, scan)["address"]] == [("3", "Old stamp")]
    assert ingested.manifest(scan.run_id)["rescanned_at"] == scan.run_id
    assert [run().files, run().files] == [0, 0]  # found once, never again


def test_a_version_left_unread_stays_claimed_through_a_run_that_reads_every_stamp_and_arrives_once(
        totesys, source, pipeline_env, ingested, monkeypatch):
    """A run that reads recent stamps leaves an old stamp of an id that had ended unread (a claim);
    the next run that reads every stamp (because a long transaction ended) reads the ids that were
    in progress, not that one, and keeps the claim; the scan by transaction id ships it, once."""
    run()
    run()
    long = session(source)
    try:
        long.run("BEGIN")
        long.run("UPDATE design SET design_name = 'Long', last_updated = LOCALTIMESTAMP WHERE design_id = 1")
        assert run().files == 0  # `long` is in progress here
        _old_stamp_committed_late(totesys, source)
        assert run().files == 0  # nothing `long`'s snapshot had in progress ended: recent stamps only
        long.run("COMMIT")
    finally:
        long.close()
    every_stamp = run()
    assert ingested.manifest(every_stamp.run_id)["read"] == "full"
    assert {t: [r[f"{t}_id"] for r in rows] for t, rows in shipped(ingested, every_stamp).items()} == {
        "design": ["1"]}
    assert ingested.manifest(every_stamp.run_id)["unread"]
    monkeypatch.setenv("TOTESYS_FULL_RESCAN_SECONDS", "0")
    scan = run()
    assert [(r["address_id"], r["city"]) for r in shipped(ingested, scan)["address"]] == [("3", "Old stamp")]
    assert {t for t in shipped(ingested, scan)} == {"address"}
    assert [run().files, run().files] == [0, 0]


def test_every_run_scans_by_transaction_id_when_the_setting_is_zero(
        totesys, source, pipeline_env, ingested, monkeypatch):
    monkeypatch.setenv("TOTESYS_FULL_RESCAN_SECONDS", "0")
    run()
    run()
    _old_stamp_committed_late(totesys, source)
    assert [(r["address_id"], r["city"]) for r in shipped(ingested, run())["address"]] == [("3", "Old stamp")]
    assert run().files == 0


def test_a_run_id_collision_stops_the_ingest_without_a_manifest(totesys, pipeline_env, ingested, monkeypatch):
    taken = "20261201T120000000000Z"
    monkeypatch.setattr(ingest_run.lake, "run_id_at", lambda moment: taken)
    first = run()
    assert first.run_id == taken and first.files == 11
    before = ingested.keys()
    totesys.run("UPDATE staff SET first_name = 'Other', last_updated = LOCALTIMESTAMP WHERE staff_id = 1")
    with pytest.raises(RunIdCollision, match=taken):
        run()
    assert ingested.keys() == before  # the first run's objects untouched, no second manifest


def test_a_rerun_that_finds_its_own_earlier_writes_is_not_a_collision(totesys, pipeline_env, ingested,
                                                                      monkeypatch):
    """S3 completed a write whose answer was lost and the retry found the key taken: the object
    holds this run's own bytes, so the run goes on and writes its manifest."""
    taken = "20261201T120000000000Z"
    monkeypatch.setattr(ingest_run.lake, "run_id_at", lambda moment: taken)
    first = run()
    ingested.s3.delete_object(Bucket=ingested.bucket, Key=f"_runs/{taken}.json")  # as if the manifest never came
    again = run()  # reads everything again: the same CSV bytes under the same keys
    assert again.run_id == taken and again.files == first.files == 11
    assert ingested.manifest(taken)["rows"] == first.rows


@pytest.mark.parametrize("seed", [7, 11])
def test_interleaved_live_transactions_ship_every_version_once(totesys, source, pipeline_env, ingested,
                                                               monkeypatch, seed):
    """Random interleavings of open, committed and rolled-back transactions, savepoints, old and
    equal stamps, with runs in between: every committed version a run could see is shipped exactly
    once, and the final state of every row arrives."""
    rng = random.Random(seed)
    monkeypatch.setenv("TOTESYS_FULL_RESCAN_SECONDS", "3600")
    runs = [run()]
    open_sessions: list[pg8000.native.Connection] = []
    counter = 0
    try:
        for _step in range(60):
            action = rng.random()
            if action < 0.35 or not open_sessions:
                conn = session(source)
                conn.run("BEGIN")
                if rng.random() < 0.3:
                    conn.run("SELECT 1 FROM address LIMIT 1")  # no xid until it writes
                open_sessions.append(conn)
            elif action < 0.7:
                conn = rng.choice(open_sessions)
                counter += 1
                table, key = rng.choice([("address", "address_id"), ("staff", "staff_id"), ("design", "design_id")])
                column = {"address": "city", "staff": "first_name", "design": "design_name"}[table]
                stamp = rng.choice(["LOCALTIMESTAMP", "clock_timestamp()::timestamp",
                                    "LOCALTIMESTAMP - interval '2 hours'"])
                savepoint = rng.random() < 0.3
                if savepoint:
                    conn.run("SAVEPOINT s")
                try:
                    conn.run(f"UPDATE {table} SET {column} = :value, last_updated = {stamp} "  # nosec
                             f"WHERE {key} = :id", value=f"v{counter}", id=rng.randint(1, 3))
                except pg8000.native.DatabaseError:  # a lock wait cut short by the test's timeout
                    conn.run("ROLLBACK TO SAVEPOINT s" if savepoint else "ROLLBACK")
                    if not savepoint:
                        open_sessions.remove(conn)
                        conn.close()
                    continue
                if savepoint:
                    conn.run("RELEASE SAVEPOINT s" if rng.random() < 0.8 else "ROLLBACK TO SAVEPOINT s")
            elif action < 0.9:
                conn = open_sessions.pop(rng.randrange(len(open_sessions)))
                conn.run("COMMIT" if rng.random() < 0.85 else "ROLLBACK")
                conn.close()
            else:
                runs.append(run())
            for conn in open_sessions:
                conn.run("SET lock_timeout = '50ms'")
    finally:
        for conn in open_sessions:
            conn.run("COMMIT")
            conn.close()
    monkeypatch.setenv("TOTESYS_FULL_RESCAN_SECONDS", "0")
    runs += [run(), run()]
    assert runs[-1].files == 0
    versions: dict[tuple, int] = {}
    for result in runs:
        for table, rows in shipped(ingested, result).items():
            for row in rows:
                version = (table, *row.values())
                versions[version] = versions.get(version, 0) + 1
    twice = [v for v, n in versions.items() if n > 1]
    assert twice == []
    for table in ("address", "staff", "design"):
        source_table_rows = totesys.run(f"SELECT * FROM {table}")  # nosec - fixed names
        for row in source_table_rows:
            values = tuple(_csv_text(v) for v in row)
            assert (table, *values) in versions, f"{table} {values} never shipped"
    assert all(r.rows.keys() == {t.name for t in SOURCE_TABLES} for r in runs)


def _csv_text(value) -> str:
    """A source value as PostgreSQL's CSV writes it (ISO timestamps without trailing zeros in the
    fraction, t/f, NULL as '')."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="microseconds")
        return text.rstrip("0").rstrip(".")
    return str(value)


def test_a_run_takes_its_snapshot_and_its_id_under_the_source_wide_lock(totesys, source, pipeline_env):
    """Run ids must sort like snapshots (the loader keeps the latest run's version): while another
    session holds the snapshot lock, an ingest waits before it takes its snapshot."""
    holder = pg8000.native.Connection(**parse_url(source.reader_url))
    result: list = []
    try:
        holder.run("SELECT pg_advisory_lock(CAST(:key AS bigint))", key=extract.SNAPSHOT_LOCK_KEY)
        waiting = threading.Thread(target=lambda: result.append(run()))
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and result == []
        released_at = datetime.now(timezone.utc)
        holder.run("SELECT pg_advisory_unlock(CAST(:key AS bigint))", key=extract.SNAPSHOT_LOCK_KEY)
        waiting.join(timeout=30)
    finally:
        holder.close()
    assert len(result) == 1 and result[0].run_id > lake.run_id_at(released_at)
