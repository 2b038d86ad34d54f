"""A run loaded in parts (contract §4 "Parts"): each part staged on its own, the run published at once.

A processed manifest may list a big table as parts (`manifest.entries` gives one `FileEntry` per
part). Each part is *staged*: copied into the table's staging table (`etl_stage_<table>`,
schema/staging.py) in a transaction of its own, together with its row in `etl_stage_ledger`, keyed
(run, table, part). The ledger row is inserted first, `ON CONFLICT DO NOTHING`: a second invocation
staging the same part waits on that key until the first commits (then stages nothing) or rolls back
(then stages it itself). So a replayed, concurrent or crashed part stages its rows exactly once.
Staging takes no loader lock, so parts stage in parallel; nothing a reader of the warehouse
queries reads a staging table.

Once every part the manifest names is staged, the run is *published* by `load.run.load_run`,
under the loaders' lock, in ONE transaction: each parted table's staged rows go into the same temp
table a whole file would have filled (`fill_temp`), the same merge as an unparted run follows, the
run's staging rows are removed (`clear`) and its ledger row written. Readers see all of it or none.

A table the run finds empty (a first load, the usual reason for parts) skips the temp table: its
staged rows go straight into it with its indexes rebuilt after (`fill_direct`), as a whole file's
rows do (load/files.py `copy_table`). At 30M orders the merge through temp tables kept the publishing
invocation busy for most of Lambda's 15 minutes (readme_files/benchmarks.md).

Staging is for runs too big for one invocation. A run of at most `TOTESYS_WHOLE_RUN_ROWS` rows in
parts (`loads_whole`) is loaded whole by one invocation instead: its parts are copied as a whole
table's files are, each row written once, where staging writes it three times (the part's temp
table, the staging table, the star table). At 10M orders staging made the loader 23 times slower
than at 1M for 10 times the rows.
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass

from pg8000.native import identifier

from totesys_etl import quarantine
from totesys_etl.adapters.postgres import Connection, rollback_quietly
from totesys_etl.faults import crash_point
from totesys_etl.load import bulk
from totesys_etl.fanout import handles_whole
from totesys_etl.load.files import TableFiles, copy_table, create_temp_sql, downloaded, temp_name
from totesys_etl.load.ledger import is_loaded
from totesys_etl.logs import StageLog
from totesys_etl.manifest import FileEntry
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table
from totesys_etl.schema.staging import PART, STAGING_LEDGER, staging_table
from totesys_etl.schema.warehouse import RUN_ID

_LEDGER = identifier(STAGING_LEDGER.name)


def loads_whole(conn: Connection, run_id: str, parts: list[FileEntry]) -> bool:
    """Whether the run's `parts` (entries of its manifest) are loaded whole by the publishing
    invocation, as files, rather than staged: they hold at most `TOTESYS_WHOLE_RUN_ROWS` rows
    (`fanout.handles_whole`), as the manifest counts them, and none of them is staged already (a
    run begins one way and ends it).
    """
    return bool(parts) and handles_whole(sum(p.rows for p in parts)) and not staged_parts(conn, run_id)


@dataclass(frozen=True)
class Staged:
    """One part as the staging ledger has it: its rows, or that its file was quarantined instead."""

    rows: int
    quarantined: bool


def staged_parts(conn: Connection, run_id: str) -> dict[tuple[str, int], Staged]:
    """Every part of the run the ledger holds as staged (committed), by (table, part)."""
    rows = conn.run(f"SELECT table_name, part, rows, quarantined FROM {_LEDGER} WHERE run_id = :run_id",  # nosec
                    run_id=run_id)
    return {(table, part): Staged(n, quarantined) for table, part, n, quarantined in rows}


def unstaged(conn: Connection, run_id: str, parts: list[FileEntry]) -> list[FileEntry]:
    """The parts (entries of the run's manifest) not staged yet, in manifest order."""
    done = staged_parts(conn, run_id)
    return [p for p in parts if (p.table, p.part) not in done]


def stage_part(conn: Connection, bucket: str, run_id: str, part: FileEntry, table: Table, log: StageLog
               ) -> Staged | None:
    """Stage one part in a transaction of its own with its ledger row; None if that changed nothing
    (the part was staged already, or the run is loaded already).

    `part` must be a trusted entry of the run's processed manifest and `table` its declaration:
    the staging table's name comes from the declaration, never from a request. A part file that is
    bad in itself is quarantined, as a whole file of an unparted run would be, and staged as such
    (no rows), so the rest of the run still publishes. A transient fault rolls everything back.
    """
    conn.run("START TRANSACTION ISOLATION LEVEL READ COMMITTED")
    try:
        conn.run(f"INSERT INTO {_LEDGER} (run_id, table_name, part, rows, quarantined, staged_at) "  # nosec B608
                 "VALUES (:run_id, :table, :part, 0, false, now()) ON CONFLICT DO NOTHING",
                 run_id=run_id, table=table.name, part=part.part)
        if conn.row_count == 0 or is_loaded(conn, run_id):  # staged by another, or published meanwhile
            rollback_quietly(conn)
            return None
        staged = _copy_part(conn, bucket, run_id, part, table, log)
        conn.run(f"UPDATE {_LEDGER} SET rows = :rows, quarantined = :quarantined "  # nosec B608
                 "WHERE run_id = :run_id AND table_name = :table AND part = :part", rows=staged.rows,
                 quarantined=staged.quarantined, run_id=run_id, table=table.name, part=part.part)
        crash_point("load.before_commit")
    except BaseException:
        rollback_quietly(conn)
        raise
    conn.run("COMMIT")
    crash_point("load.after_commit")
    log.info("part staged", table=table.name, part=part.part, rows=staged.rows, quarantined=staged.quarantined)
    return staged


def _copy_part(conn: Connection, bucket: str, run_id: str, part: FileEntry, table: Table, log: StageLog) -> Staged:
    """The part's file into a temp table (files.copy_table: its checks, savepoint and quarantine
    rules), then into the staging table with its run and part."""
    with closing(downloaded(bucket, [part.key])) as downloads:
        copied = copy_table(conn, bucket, TableFiles(table, (part.key,), part.rows), downloads)
    if copied.refused:
        (key, why), = copied.refused
        quarantine.quarantine_file(bucket, key, bucket, run_id, why, quarantine.QUARANTINED_FILE, log)
        return Staged(0, True)
    staging, names = staging_table(table.name), [c.name for c in table.data_columns]
    conn.run(f"INSERT INTO {identifier(staging.name)} ({column_list([RUN_ID.name, PART.name, *names])}) "  # nosec
             f"SELECT CAST(:run_id AS text), CAST(:part AS int), {column_list(names)} "
             f"FROM {identifier(temp_name(table))}", run_id=run_id, part=part.part)
    conn.run(f"DROP TABLE {identifier(temp_name(table))}")
    return Staged(copied.rows, False)


def fill_temp(conn: Connection, table: Table, run_id: str) -> int:
    """Inside the publishing transaction: the run's staged rows of `table` into the temp table a
    whole file of it would have filled (files.create_temp_sql), in part order; the rows moved.

    From there the run's merge is the unparted run's, statement for statement.
    """
    staging, names = staging_table(table.name), [c.name for c in table.data_columns]
    conn.run(create_temp_sql(table))
    conn.run(f"INSERT INTO {identifier(temp_name(table))} ({column_list(names)}) "  # nosec B608 - declared names
             f"SELECT {column_list(names)} FROM {identifier(staging.name)} WHERE {identifier(RUN_ID.name)} = :run_id "
             f"ORDER BY {identifier(PART.name)}", run_id=run_id)
    rows = conn.row_count
    conn.run(f"ANALYZE {identifier(temp_name(table))}")
    return rows


def fill_direct(conn: Connection, table: Table, run_id: str, rows: int) -> int | None:
    """Inside the publishing transaction, for `table` found empty: the run's staged rows (about
    `rows`) straight into it, each with the run's `etl_run_id`; the rows moved.

    None, with the transaction as it was, if PostgreSQL rejects them (e.g. one version in two
    parts): the caller then takes the temp table and the merge (`fill_temp`), which settle that.
    Its indexes are dropped before and built after (bulk.py). The rows go in the staging table's
    order, not sorted by part: a fact's surrogate keys carry no order (every reader orders by the
    source's ids and stamps), and sorting cost 11 s of 28 for 11M payments. The run id is a value of
    the SELECT, so no column default is needed as for a COPY.
    """
    staging, names = staging_table(table.name), [c.name for c in table.data_columns]

    def fill() -> int:
        conn.run(f"INSERT INTO {identifier(table.name)} ({column_list([RUN_ID.name, *names])}) "  # nosec B608
                 f"SELECT CAST(:run_id AS text), {column_list(names)} FROM {identifier(staging.name)} "
                 f"WHERE {identifier(RUN_ID.name)} = :run_id", run_id=run_id)
        return conn.row_count

    return bulk.filled_directly(conn, table.name, rows, fill)


def clear(conn: Connection, run_id: str, tables: list[Table]) -> None:
    """Inside the publishing transaction: remove the run's staged rows and its staging ledger rows.

    A staging table that holds no other run's rows is truncated: deleting a 30M-order run's rows
    row by row took minutes of the publishing invocation. The table is locked first, so every part
    staged into it by another run has committed, and its ledger row (written in the same
    transaction as its rows) is then visible to this READ COMMITTED check; a part staged later
    waits for the lock and inserts its rows after this transaction commits.
    """
    for table in tables:
        staging = identifier(staging_table(table.name).name)
        conn.run(f"LOCK TABLE {staging} IN ACCESS EXCLUSIVE MODE")
        others = conn.run(f"SELECT EXISTS (SELECT 1 FROM {_LEDGER} WHERE table_name = :name "  # nosec B608
                          "AND run_id <> :run_id)", name=table.name, run_id=run_id)[0][0]
        if others:
            conn.run(f"DELETE FROM {staging} WHERE {identifier(RUN_ID.name)} = :run_id",  # nosec B608 - declared
                     run_id=run_id)
        else:
            conn.run(f"TRUNCATE {staging}")
    conn.run(f"DELETE FROM {_LEDGER} WHERE run_id = :run_id", run_id=run_id)  # nosec B608
