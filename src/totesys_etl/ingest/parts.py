"""A large table's read split into parts (contract §4 "Parts"), read in parallel under one snapshot.

A first read of a table (the first run, a restore, a stopped table resuming from nothing) that
would ship more than `TOTESYS_PART_ROWS` rows is written as parts, `lake.part_key(...)`, each a
range of the table's primary key, so that the processor and the loader can take them in separate
invocations, each well inside Lambda's limits. Ordinary runs (what changed since the previous
run) stay one file per table: their size follows the changes, and counting them would cost a
second scan.

The parts are read by several connections at once, and they must all see exactly the run's
snapshot, or a row updated during the read could be missed by one part and read by another, or
read twice (the bug Airbyte's users hit with chunks read under separate snapshots). So the run's
own snapshot transaction calls `pg_export_snapshot()`, and each reader opens
`REPEATABLE READ READ ONLY` and imports it with `SET TRANSACTION SNAPSHOT` before reading
anything. Every reader imports before the exporting transaction may end; afterwards each holds the
snapshot on its own, so the run's transaction commits as soon as its own work is done. Importing
needs no privilege (the read-only role does it) and works on a hot standby too (PostgreSQL 10 on;
`test/ingest/years/test_restore_and_standby.py`).

Split points are the primary key's range under the snapshot, cut evenly: serial ids are dense
enough that parts come out near `TOTESYS_PART_ROWS` (gaps only make a part smaller). The parts'
rows must add up to the count taken under the same snapshot, or the run stops without a manifest.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

from pg8000.native import identifier, literal

from totesys_etl import lake
from totesys_etl.adapters import postgres, s3
from totesys_etl.config import Database, whole_number_setting
from totesys_etl import manifest as manifests
from totesys_etl.errors import RunIdCollision, SourceUnavailable, lake_errors
from totesys_etl.ingest import extract
from totesys_etl.logs import StageLog, Timer
from totesys_etl.schema.model import Table

#: The setting: the most rows a table's read ships in one file before it is split into parts.
PART_ROWS_VARIABLE = "TOTESYS_PART_ROWS"
#: 2,000,000 rows: at 10M orders (benchmarks.md) the processor took 172 s and 617 MB, the loader 70 s
#: and 721 MB, for 10M-row tables; a fifth of that per invocation leaves Lambda's 15 minutes and
#: the functions' memory and /tmp many times over, while a 1M-order first load stays one file per table.
DEFAULT_PART_ROWS = 2_000_000
#: The fewest bytes a row of a source table takes on disk: a 24-byte tuple header, a 4-byte line
#: pointer and at least its 4-byte key.
MIN_ROW_BYTES = 32
#: Connections reading parts at once (besides the run's own, which reads the unsplit tables).
PART_READERS = 4


def part_rows(env: Mapping[str, str] | None = None) -> int:
    """`TOTESYS_PART_ROWS` (a positive integer), or the default; ConfigurationError otherwise."""
    return whole_number_setting(os.environ if env is None else env, PART_ROWS_VARIABLE, DEFAULT_PART_ROWS, "rows")


@dataclass(frozen=True)
class Split:
    """A table's read in parts: the rows the snapshot holds for it, and each part's key range
    `[low, high)`, in part order (together they cover every key from the smallest to the largest)."""

    table: Table
    query: str
    rows: int
    bounds: tuple[tuple[int, int], ...]

    def part_query(self, part: int) -> str:
        """The read of one part: the table's query limited to its key range (integers only)."""
        low, high = self.bounds[part]
        key = identifier(self.table.key[0])
        # The inner query is built from the declaration (extract.changes_query); the bounds are ints.
        return f"SELECT * FROM ({self.query}) AS part WHERE {key} >= {int(low)} AND {key} < {int(high)}"  # nosec B608


def sizes(conn, tables: list[Table]) -> dict[str, tuple[int, int]]:
    """Each table's planner estimate of its rows (`pg_class.reltuples`, -1 before it was first
    analysed) and its size on disk in bytes: one catalog query for all of them, free of scans."""
    found = conn.run("SELECT c.relname, c.reltuples::bigint, pg_relation_size(c.oid) FROM pg_class c"
                     " JOIN pg_namespace n ON n.oid = c.relnamespace"
                     " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(CAST(:names AS text[]))",
                     names=[t.name for t in tables])
    return {name: (int(estimate), int(size)) for name, estimate, size in found}


def split(conn, table: Table, query: str, limit: int, size: tuple[int, int] = (-1, 1 << 62)) -> Split | None:
    """The parts of a first read of `table` under the connection's snapshot, or None for one file.

    `size` (from `sizes`) rules out a table below `limit` for free: by the planner's estimate, or
    by its size on disk (a row takes at least MIN_ROW_BYTES, so a table of at most `limit` times
    that cannot hold more rows). Otherwise the rows and the key range are counted under the run's
    snapshot, a scan of the table.
    """
    estimate, on_disk = size
    if 0 <= estimate < limit // 2 or on_disk <= limit * MIN_ROW_BYTES:
        return None
    key = identifier(table.key[0])
    # The query comes from the declaration (extract.changes_query); nothing here is input.
    (rows, low, high), = conn.run(f"SELECT count(*), min({key}), max({key}) FROM ({query}) AS r")  # nosec B608
    if rows <= limit:
        return None
    count = min(math.ceil(rows / limit), lake.MAX_PARTS)
    width = math.ceil((high - low + 1) / count)
    bounds = tuple((low + i * width, min(low + (i + 1) * width, high + 1)) for i in range(count))
    return Split(table, query, rows, tuple(b for b in bounds if b[0] < b[1]))


def export_snapshot(conn) -> str:
    """The id of the snapshot of the connection's open REPEATABLE READ transaction, for the readers."""
    return conn.run("SELECT pg_export_snapshot()")[0][0]


@dataclass(frozen=True)
class PartJob:
    split: Split
    part: int


class Readers:
    """Connections that import the run's snapshot and read parts from a queue, each to its own
    CSV, handed to `done(job, path, rows)` (which uploads and removes it).

    `start` returns once every reader has imported the snapshot (or raises): only then may the
    exporting transaction end. `join` waits for every part and raises the first failure; a failure
    stops the other readers at their next part.
    """

    def __init__(self, database: Database, snapshot: str, jobs: list[PartJob], folder: str,
                 done: Callable[[PartJob, str, int], None], log: StageLog):
        self.database, self.snapshot, self.folder, self.done, self.log = database, snapshot, folder, done, log
        self.jobs: queue.Queue[PartJob] = queue.Queue()
        for job in jobs:
            self.jobs.put(job)
        self.count = max(1, min(PART_READERS, len(jobs)))
        self.imported = threading.Barrier(self.count + 1)
        self.errors: list[BaseException] = []
        self.rows: dict[tuple[str, int], int] = {}  # (table, part) -> rows, once uploaded
        self.stopped = False
        self.threads = [threading.Thread(target=self._read, args=(i,), name=f"totesys-part-reader-{i}", daemon=True)
                        for i in range(self.count)]

    def start(self) -> "Readers":
        for thread in self.threads:
            thread.start()
        try:
            self.imported.wait()
        except threading.BrokenBarrierError:
            self.join()
            raise SourceUnavailable("a part reader could not import the run's snapshot") from None
        return self

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def stop(self) -> None:
        """Stop after the parts being read (the run failed elsewhere); their errors are dropped."""
        self.stopped = True
        for thread in self.threads:
            thread.join()

    def _read(self, number: int) -> None:
        conn = None
        try:
            conn = postgres.connect(self.database, application_name="totesys-etl-ingest-part")
            conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # The id comes from pg_export_snapshot(); SET takes no bind parameters, so it is quoted.
            conn.run(f"SET TRANSACTION SNAPSHOT {literal(self.snapshot)}")
            conn.run("SET LOCAL DateStyle = 'ISO, MDY'")  # as the run's own transaction (run.py)
        except BaseException as e:
            self.errors.append(e)
            self.imported.abort()
            if conn is not None:
                postgres.close_quietly(conn)
            return
        try:
            self.imported.wait()
            while not self.errors and not self.stopped:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                self._one(conn, job, number)
            conn.run("COMMIT")
        except BaseException as e:
            self.errors.append(e)
            self.imported.abort()
        finally:
            postgres.close_quietly(conn)

    def _one(self, conn, job: PartJob, number: int) -> None:
        timer = Timer()
        path = os.path.join(self.folder, f"{job.split.table.name}.part{job.part:05d}.csv")
        rows = extract.extract_table(conn, job.split.part_query(job.part), path)
        self.log.info("part extracted", table=job.split.table.name, part=job.part, rows=rows, reader=number,
                      seconds=timer.seconds)
        self.done(job, path, rows)
        self.rows[(job.split.table.name, job.part)] = rows


def start(conn, source: Database, bucket: str, run_id: str, splits: dict[str, Split], folder: str,
          log: StageLog) -> Readers:
    """Export the snapshot of `conn`'s open REPEATABLE READ transaction and start readers of every
    part under it, each part uploaded create-only as soon as it is read. Returns once every reader
    has imported the snapshot: `conn`'s transaction may end after that."""
    jobs = [PartJob(s, i) for s in splits.values() for i in range(len(s.bounds))]

    def done(job: PartJob, path: str, rows: int) -> None:
        key = lake.part_key(job.split.table.name, run_id, "csv", job.part)
        try:
            with lake_errors(bucket, key):
                # A key holding these bytes is this run's own earlier attempt; other bytes, another ingest's.
                if not s3.upload_file_create_only(bucket, key, path) and not s3.holds(bucket, key, path=path):
                    raise RunIdCollision(f"another ingest already wrote objects of run {run_id}: stopped without "
                                         "a manifest, so the next run reads these changes")
        finally:
            os.remove(path)

    return Readers(source, export_snapshot(conn), jobs, folder, done, log).start()


def finish(readers: Readers, splits: dict[str, Split], run_id: str) -> tuple[dict[str, dict], dict[str, int]]:
    """Wait for every part: each table's manifest entry (`manifest.parted_entry`) and rows, checked
    against the count taken under the same snapshot (a difference stops the run without a manifest)."""
    readers.join()
    files, rows = {}, {}
    for name, found in splits.items():
        counts = [readers.rows[(name, i)] for i in range(len(found.bounds))]
        if sum(counts) != found.rows:
            raise SourceUnavailable(f"the parts of {name} hold {sum(counts)} rows where the run's snapshot "
                                    f"counted {found.rows}: stopped without a manifest")
        rows[name] = found.rows
        entry = manifests.parted_entry([{"key": lake.part_key(name, run_id, "csv", i), "rows": n}
                                        for i, n in enumerate(counts)])
        files[name] = {**entry, "columns": found.table.column_names}
    return files, rows
