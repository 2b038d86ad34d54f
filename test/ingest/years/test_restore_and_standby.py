"""Restores, failovers and read replicas (contract §2): a source restored from an older backup is
detected whatever its ids do afterwards, and a hot standby serves as the source with every method,
the late-commit bound included."""
from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404 - pg_basebackup
import time

import pytest

from totesys_etl.config import Settings
from totesys_etl.ingest.run import ingest
from totesys_etl.local.services import servers

pytestmark = pytest.mark.slow


def run():
    return ingest(Settings.from_env())


def _copy_stopped(cluster: servers.Postgres, to) -> servers.Postgres:
    """A byte copy of the stopped cluster's data folder: the backup a restore starts from."""
    assert not cluster.is_running()
    shutil.copytree(cluster.data_dir, to, symlinks=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", servers.RUN_AS_USER, str(to)], check=True)  # nosec B603 B607
    return servers.Postgres(to, cluster.port, cluster.password, cluster.bindir)


def test_a_restore_whose_ids_catch_up_is_detected_and_what_it_commits_arrives(
        own_source, cluster_home, shipped, logs):
    """Issue 34.3: the source is restored from a backup taken before the previous run and, before
    the next run, hands out as many ids as the original had. The next run names what it detected,
    and a change committed after the restore arrives."""
    first = run()
    own_source.cluster.stop()
    backup = _copy_stopped(own_source.cluster, cluster_home / "backup")
    own_source.start()
    own_source.consume_ids(500)
    own_source.run("UPDATE address SET city = 'Lost with the restore', last_updated = LOCALTIMESTAMP "
                   "WHERE address_id = 1")
    previous = run()
    assert [r["city"] for r in shipped(previous)["address"]] == ["Lost with the restore"]
    original_next = own_source.next_xid()
    own_source.cluster.stop()
    own_source.cluster = backup  # the restored backup, same port and credentials
    own_source.start()
    own_source.consume_until(original_next + 10)  # its ids catch up with the previous run's, and pass them
    own_source.run("UPDATE staff SET first_name = 'After the restore', last_updated = LOCALTIMESTAMP "
                   "WHERE staff_id = 2")
    after = run()
    warnings = [line["message"] for line in logs if line["level"] == "WARNING"]
    assert any("not the history the previous run read" in w for w in warnings), warnings
    assert ("2", "After the restore") in [(r["staff_id"], r["first_name"]) for r in shipped(after)["staff"]]
    assert ("1", "address_line_1 1") in [(r["address_id"], r["address_line_1"]) for r in shipped(after)["address"]]
    assert shipped(after)["address"][0]["city"] != "Lost with the restore"
    assert run().files == 0 and first.files == 11


def test_a_clean_restart_is_not_taken_for_a_restore(own_source, shipped, logs):
    run()
    own_source.run("CHECKPOINT")
    own_source.cluster.stop()
    own_source.start()
    own_source.run("UPDATE staff SET first_name = 'After a restart', last_updated = LOCALTIMESTAMP WHERE staff_id = 1")
    after = run()
    assert {t: [r[f"{t}_id"] for r in rows] for t, rows in shipped(after).items()} == {"staff": ["1"]}
    assert not [line for line in logs if "not the history" in line["message"]]


def _standby_of(primary: servers.Postgres, home) -> servers.Postgres:
    """A streaming hot standby made by `pg_basebackup -R`, on a port of its own."""
    folder = home / "standby"
    folder.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, servers.RUN_AS_USER)
    command = servers._run_as() + ["env", f"PGPASSWORD={primary.password}", str(primary.bindir / "pg_basebackup"),
                                   "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D",
                                   str(folder / "data"), "-R", "-X", "stream", "-c", "fast", "--no-sync"]
    subprocess.run(command, check=True, capture_output=True)  # nosec B603
    standby = servers.Postgres(folder / "data", servers.free_port(), primary.password, primary.bindir)
    standby.start()
    return standby


def test_a_hot_standby_as_the_source_loses_no_late_write_with_an_old_stamp(
        own_source, cluster_home, shipped, ingested, monkeypatch):
    """Issue 34.4: on a standby `pg_current_snapshot()` lists no running transaction. A transaction
    open across a run, whose id is below that run's xmax, writes a stamp three hours old and commits:
    the next run reads it. The first run reads its tables in parts (issue 38): the readers import
    the snapshot the run exported, on the standby too."""
    standby = _standby_of(own_source.cluster, cluster_home)
    try:
        on_standby = own_source.reader_url.replace(f":{own_source.cluster.port}/", f":{standby.port}/")
        monkeypatch.setenv("TOTESYS_SOURCE_URL", on_standby)
        replayed = _replay_waiter(own_source, standby)
        monkeypatch.setenv("TOTESYS_PART_ROWS", "2")
        first = run()
        assert first.rows["staff"] == 3
        parted = ingested.manifest(first.run_id)["files"]["staff"]
        assert [p["rows"] for p in parted["parts"]] == [2, 1]
        late = own_source.admin()
        try:
            late.run("BEGIN")
            late.run("INSERT INTO scratch VALUES (1)")  # takes an id
            own_source.run("UPDATE design SET design_name = 'Later commit', last_updated = LOCALTIMESTAMP "
                           "WHERE design_id = 1")  # commits after it: the standby's xmax passes the late id
            replayed()
            during = run()
            assert {t: [r[f"{t}_id"] for r in rows] for t, rows in shipped(during).items()} == {"design": ["1"]}
            late.run("UPDATE staff SET first_name = 'Old stamp', last_updated = LOCALTIMESTAMP - interval '3 hours' "
                     "WHERE staff_id = 2")
            late.run("COMMIT")
        finally:
            late.close()
        replayed()
        after = run()
        assert [(r["staff_id"], r["first_name"]) for r in shipped(after).get("staff", [])] == [("2", "Old stamp")]
        replayed()
        assert run().files == 0
    finally:
        standby.destroy()


def _replay_waiter(primary, standby: servers.Postgres):
    """A function that waits until the standby has replayed everything the primary has written."""
    from totesys_etl.local.services import admin

    def wait() -> None:
        target = primary.run("SELECT pg_current_wal_insert_lsn()::text")[0][0]  # commits are asynchronous
        conn = admin.admin_connection(standby, "totesys")
        try:
            for _ in range(600):
                if conn.run("SELECT pg_last_wal_replay_lsn() >= CAST(:t AS pg_lsn)", t=target)[0][0]:
                    return
                time.sleep(0.05)
        finally:
            conn.close()
        raise AssertionError("the standby did not catch up")
    return wait
