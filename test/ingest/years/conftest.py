"""Sources that have lived for years (contract §2 "A production source, for years", issue 34): each test
makes its own PostgreSQL 15 cluster, since what it does to it (a jump of the transaction counter, a
frozen table, a hot standby, a restore, a clock stepped back) is not for a shared one.

Nothing here is a mock: `pg_resetwal` moves the counter, `pg_basebackup -R` makes the standby,
libfaketime steps the server's clock, a copied data folder is the restored backup.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess  # nosec B404 - the tests drive PostgreSQL's own tools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pg8000.native
import pytest

from totesys_etl.local.services import admin, servers
from totesys_etl.schema import SOURCE_TABLES
from totesys_etl.schema.ddl import create_table

DATABASE = "totesys"
ROWS = 3
#: Debian's libfaketime (package faketime; the Makefile installs it); the server reads its offset from
#: a file on every clock call.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), "libfaketime.so.1")


@dataclass
class OwnSource:
    """A cluster of the test's own with the eleven tables and the read-only role."""

    cluster: servers.Postgres
    reader_password: str
    clock_file: Path | None = None

    @property
    def admin_url(self) -> str:
        return self.cluster.url(DATABASE)

    @property
    def reader_url(self) -> str:
        return self.cluster.url(DATABASE, admin.READER_ROLE, self.reader_password)

    def admin(self) -> pg8000.native.Connection:
        return admin.admin_connection(self.cluster, DATABASE)

    def run(self, sql: str, **params):
        conn = self.admin()
        try:
            return conn.run(sql, **params)
        finally:
            conn.close()

    def start(self) -> None:
        if self.clock_file is None:
            self.cluster.start()
            return
        _start_with_env(self.cluster, {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
                                       "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_RESET": "1"})

    def step_clock(self, offset: str) -> None:
        """Set the server's clock offset (libfaketime's syntax, e.g. '-30m'); every backend sees it at once."""
        self.clock_file.write_text(f"{offset}\n")

    def freeze_everything(self) -> None:
        """VACUUM FREEZE every database, catalogs included: the frozen state a years-old source is in."""
        for database in ("template1", "postgres", DATABASE):
            admin.admin_run(self.cluster, database, "VACUUM FREEZE")

    def set_next_xid(self, epoch: int, xid: int) -> None:
        """Stop, move the transaction counter to (epoch, xid) with pg_resetwal, start again. The
        commit-log segment the new id needs is created zeroed, as pg_resetwal's documentation says."""
        self.cluster.stop()
        segment = self.cluster.data_dir / "pg_xact" / f"{xid // (32 * 32768):04X}"
        if not segment.exists():
            segment.write_bytes(bytes(32 * 8192))
            _chown(segment)
        self.cluster._run("pg_resetwal", "-e", str(epoch), "-x", str(xid), str(self.cluster.data_dir))
        self.start()

    def consume_ids(self, count: int) -> None:
        """Commit `count` transactions that each take an id and write nothing of the eleven tables."""
        self.run(f"DO $$ BEGIN FOR i IN 1..{int(count)} LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; "
                 "END $$")

    def next_xid(self) -> int:
        """The id the next transaction that writes gets (this probe takes one itself)."""
        return int(self.run("SELECT pg_current_xact_id()::text")[0][0]) + 1

    def consume_until(self, xid: int) -> None:
        """Commit transactions until `xid` is the next id handed out."""
        left = xid - self.next_xid()
        assert left >= 0, f"{xid} has been handed out already"
        if left:
            self.consume_ids(left)


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, servers.RUN_AS_USER)


def _start_with_env(cluster: servers.Postgres, env: dict[str, str]) -> None:
    options = (f"-p {cluster.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off "
               "-c wal_level=logical "  # as servers.Postgres.start: a slot may be read (contract §10)
               "-c synchronous_commit=off -c full_page_writes=off -c timezone=UTC -c lc_messages=C")
    command = servers._run_as() + ["env", *(f"{k}={v}" for k, v in env.items()), str(cluster.bindir / "pg_ctl"),
                                   "-D", str(cluster.data_dir), "-w", "-t", "60", "-l",
                                   str(cluster.data_dir / "server.log"), "-o", options, "start"]
    subprocess.run(command, check=True, capture_output=True)  # nosec B603 - fixed tools


def make_source(home: Path, value, clock_file: Path | None = None) -> OwnSource:
    """A cluster of its own with the eleven tables, each holding ROWS rows made by `value` (a column's
    SQL expression of generate_series' `g`: the `generated_value` fixture)."""
    cluster = servers.Postgres.create(home / "pg")
    source = OwnSource(cluster, "reader-" + os.urandom(6).hex(), clock_file)
    if clock_file is not None:
        cluster.stop()
        source.start()
    admin.create_database(cluster, DATABASE)
    admin.grant_reader(cluster, DATABASE, source.reader_password)
    conn = source.admin()
    try:
        for table in SOURCE_TABLES:
            conn.run(create_table(table))
            _insert(conn, table, value)
        conn.run("CREATE TABLE scratch (n bigint)")  # another application's table: ids that write none of ours
    finally:
        conn.close()
    return source


def _insert(conn, table, value) -> None:
    from totesys_etl.schema.ddl import column_list

    conn.run(f"INSERT INTO {pg8000.native.identifier(table.name)} ({column_list(table.column_names)}) "  # nosec
             f"SELECT {', '.join(value(c) for c in table.columns)} FROM generate_series(1, {ROWS}) AS g")


@pytest.fixture
def cluster_home():
    home = Path(tempfile.mkdtemp(prefix="totesys-etl-years-"))
    _chown(home)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def own_source(cluster_home, buckets, monkeypatch, generated_value):
    """A source cluster of this test's own, read by the pipeline through the read-only role."""
    source = make_source(cluster_home, generated_value)
    monkeypatch.setenv("TOTESYS_SOURCE_URL", source.reader_url)
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    yield source
    source.cluster.destroy()


def wait_until(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture
def shipped(ingested):
    """`shipped(result)`: table -> the rows (dicts) the run's CSVs hold."""
    import csv
    import io

    def rows(result) -> dict[str, list[dict]]:
        found = {}
        for table, entry in ingested.manifest(result.run_id)["files"].items():
            found[table] = list(csv.DictReader(io.StringIO(ingested.body(entry["key"]).decode("utf-8"), newline="")))
        return found
    return rows


@pytest.fixture
def versions(shipped):
    """`versions(results)`: how many times each version (table and every value) was shipped."""
    def count(results) -> dict[tuple, int]:
        counted: dict[tuple, int] = {}
        for result in results:
            for table, rows in shipped(result).items():
                for row in rows:
                    key = (table, *row.values())
                    counted[key] = counted.get(key, 0) + 1
        return counted
    return count


@pytest.fixture
def clocked_source(cluster_home, buckets, monkeypatch, generated_value):
    """Like `own_source`, with the server's clock under the test's control (`step_clock`)."""
    clock = cluster_home / "clock"
    clock.write_text("+0\n")
    _chown(clock)
    source = make_source(cluster_home / "clocked", generated_value, clock_file=clock)
    monkeypatch.setenv("TOTESYS_SOURCE_URL", source.reader_url)
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    yield source
    source.cluster.destroy()
