"""Loading processed runs into the warehouse: the plain function the Lambda handler calls.

`load(settings, run_ids)` connects, takes the loaders' advisory lock (waiting a bounded time,
else "deferred"), migrates, then loads each requested run, or sweeps for every processed run
the ledger lacks. `load_run` is one run in ONE transaction, ledger row included, so a crash at
any point leaves the run either wholly loaded or not at all (readme_files/design.md, "Loader").
A run whose manifest lists tables in parts is loaded whole, its parts copied as files, while it
holds few enough rows for one invocation (load/parts.py `loads_whole`). A bigger one has them staged
first, each part in a transaction of its own (load/parts.py: here in turn, or by other invocations
through the fan-out), and is then published by that same one transaction, its parted tables read
from staging instead of files.
"""
from __future__ import annotations

import os
from contextlib import closing
from datetime import date, datetime, timezone
from typing import Iterable, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from totesys_etl import lake, quarantine, runs
from totesys_etl import manifest as manifests
from totesys_etl.adapters.postgres import (Connection, DatabaseError, InterfaceError, advisory_lock, close_quietly,
                                           connect, transaction)
from totesys_etl.config import Settings
from totesys_etl.errors import (InvalidInput, LakeUnavailable, LoadFailed, WarehouseUnavailable, is_missing,
                                describe)
from totesys_etl.events import PartRequest
from totesys_etl.fanout import fan_out
from totesys_etl.faults import crash_point
from totesys_etl.load import bulk, deletes, deliveries, merge, parts
from totesys_etl.load.files import TableFiles, copy_table, downloaded
from totesys_etl.load.ledger import LOADER_LOCK_KEY, is_loaded, load_mark, loaded_runs, record_run, set_mark
from totesys_etl.load.migrations import migrate
from totesys_etl.load.rates import merge_rates
from totesys_etl.logs import StageLog, Timer
from totesys_etl.runs import RunResult, StageResult
from totesys_etl.schema import API_FACTS, DELETE_LOGS, DIM_DATE, DIMENSIONS, FACTS, STATE_TABLES, Table, state_table
from totesys_etl.schema.courier import EVENT_FACTS
from totesys_etl.schema.staging import LOADED_TABLES

STAGE = "load"
LOCK_WAIT_VARIABLE = "TOTESYS_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_WAIT_SECONDS = 60.0

#: The lake files a processed manifest may name, by table name: what the loader loads.
LOADABLE: dict[str, Table] = {t.name: t for t in LOADED_TABLES}
#: Tables a file may be copied straight into when they are empty (load/files.py): state and the
#: totesys facts (the rates' merge reads its temp table, and a run's rates are a few thousand rows).
DIRECT_LOADABLE = frozenset(t.name for t in (*STATE_TABLES, *FACTS))


def lock_wait_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long a loader waits for another loader's lock before deferring (contract §3: bounded)."""
    env = os.environ if env is None else env
    return float(env.get(LOCK_WAIT_VARIABLE) or DEFAULT_LOCK_WAIT_SECONDS)


def warehouse_connection(settings: Settings | None = None) -> Connection:
    """A connection to the warehouse (URL, else its secret); WarehouseUnavailable without credentials."""
    settings = settings or Settings.from_env()
    return connect(settings.warehouse, application_name="totesys-etl-load")


def load(settings: Settings, run_ids: Iterable[str] | None = None, wait_seconds: float | None = None,
         today: date | None = None, log: StageLog | None = None, part: PartRequest | None = None) -> dict:
    """Load `run_ids` (or, if None, sweep for every pending run); with `part` (a fan-out's request)
    stage that one part of a run in parts instead, and publish the run if it was its last part.

    Returns `{"stage", "status": "ok"|"deferred", "runs": [...], "seconds"}`; "runs" lists only
    the runs this call loaded. Raises an EtlError (already logged if it concerns one run) when
    work failed.
    """
    timer, log = Timer(), log or StageLog(STAGE)
    wait_seconds = lock_wait_seconds() if wait_seconds is None else wait_seconds
    run_ids = None if run_ids is None else sorted(set(run_ids))
    if run_ids == [] and part is None:  # an event for objects that are not processed manifests: nothing to do
        return StageResult(STAGE, (), timer.seconds).to_json()
    conn = warehouse_connection(settings)
    status = "ok"
    try:
        if part is not None:
            results, status = _load_part(conn, settings.processed_bucket, part, wait_seconds,
                                         log.bind(run_id=part.run_id), today)
        elif not advisory_lock(conn, LOADER_LOCK_KEY, wait_seconds):
            log.warning("another loader holds the lock: deferred to it", wait_seconds=wait_seconds)
            results, status = [], "deferred"
        else:
            _migrate(conn, log)
            if run_ids is None:
                results = _sweep(conn, settings, log, today)
            else:
                results = _load_each(conn, settings.processed_bucket, run_ids, log, today)
    except InterfaceError:
        raise WarehouseUnavailable("the warehouse connection was lost during the load") from None
    except DatabaseError as e:
        raise LoadFailed(f"warehouse: {describe(e)}") from None
    except (ClientError, BotoCoreError) as e:
        raise LakeUnavailable(describe(e)) from None
    finally:
        close_quietly(conn)
    return StageResult(STAGE, tuple(results), timer.seconds, status).to_json()


def _migrate(conn: Connection, log: StageLog) -> None:
    applied = migrate(conn)
    if applied:
        log.info("warehouse migrated", versions=applied)


def _load_part(conn: Connection, bucket: str, request: PartRequest, wait_seconds: float, log: StageLog,
               today: date | None) -> tuple[list[RunResult], str]:
    """One part request: stage that part (load/parts.py), then publish the run if no part is missing.

    Staging takes no lock, so parts stage side by side; publishing takes the loaders' lock as any
    load does, and if it stays held the run is left to its holder or the next sweep ("deferred").
    The request is trusted only as far as the run's processed manifest names that part: anything
    else (another table, a part past the last, a run without a manifest) is logged and ignored.
    """
    _migrate(conn, log)
    try:
        manifest = manifests.read(bucket, request.run_id)
    except ClientError as e:
        if not is_missing(e):
            raise
        log.warning("a part request for a run with no processed manifest: ignored")
        return [], "ok"
    except InvalidInput as e:  # the run's event or the sweep quarantines it
        log.warning(f"a part request for a run whose manifest is unreadable: ignored ({e})")
        return [], "ok"
    trusted, _hostile = manifests.entries(manifest, request.run_id, LOADABLE, "parquet")
    parted = [e for e in trusted if e.part is not None]
    entry = next((e for e in parted if (e.table, e.part) == (request.table, request.part)), None)
    if entry is None:
        log.warning("a part request that names no part of this run's manifest: ignored", table=request.table,
                    part=request.part)
        return [], "ok"
    if is_loaded(conn, request.run_id):
        log.info("run already loaded: nothing to do")
        return [], "ok"
    if not parts.loads_whole(conn, request.run_id, parted):  # else published whole, as its manifest's event would
        parts.stage_part(conn, bucket, request.run_id, entry, LOADABLE[entry.table], log)
        if parts.unstaged(conn, request.run_id, parted):
            return [], "ok"  # the invocation that stages the last part publishes the run
    if not advisory_lock(conn, LOADER_LOCK_KEY, wait_seconds):
        log.warning("every part staged, but another loader holds the lock: publishing deferred to it or the sweep",
                    wait_seconds=wait_seconds)
        return [], "deferred"
    result = load_run(conn, bucket, request.run_id, log, today)
    return ([result] if result else []), "ok"


def _sweep(conn: Connection, settings: Settings, log: StageLog, today: date | None) -> list[RunResult]:
    """Every processed run after the mark that the ledger lacks, in run_id order; then `runs.sweep`
    moves the mark (kept in the warehouse, `etl_load_mark`).

    The mark accounts for every *ingested* run too, so a run ingested but not yet processed holds
    it back and a late processed run is still found by a later sweep.
    """
    mark = load_mark(conn)
    ingested = lake.runs_after(settings.ingest_bucket, mark)
    processed = lake.runs_after(settings.processed_bucket, mark)
    candidates = sorted(set(ingested) | set(processed))
    done = loaded_runs(conn, candidates)
    view = runs.Sweep(mark, candidates, done, [r for r in processed if r not in done])
    return runs.sweep(view, _loader(conn, settings.processed_bucket, log, today), lambda m: set_mark(conn, m), log,
                      LoadFailed, fatal=(InterfaceError,), unknown_kind=LoadFailed.error_kind)


def _load_each(conn: Connection, bucket: str, run_ids: list[str], log: StageLog, today: date | None
               ) -> list[RunResult]:
    """Load the runs in order; a run that fails is logged, the others still load, the call fails."""
    results, failed = runs.handle_each(run_ids, _loader(conn, bucket, log, today), log, fatal=(InterfaceError,),
                                       unknown_kind=LoadFailed.error_kind)
    runs.raise_if_failed(failed, LoadFailed)
    return results


def _loader(conn: Connection, bucket: str, log: StageLog, today: date | None):
    return lambda run_id: load_run(conn, bucket, run_id, log.bind(run_id=run_id), today)


def load_run(conn: Connection, bucket: str, run_id: str, log: StageLog, today: date | None = None
             ) -> RunResult | None:
    """Load one processed run in one transaction; None if it is already loaded (or has no manifest).

    Returns its `RunResult` (rows inserted or changed per table, files, quarantined entries).
    """
    timer = Timer()
    if is_loaded(conn, run_id):
        log.info("run already loaded: nothing to do")
        return None
    try:
        manifest = manifests.read(bucket, run_id)
    except ClientError as e:
        if is_missing(e):
            log.warning("no processed manifest for this run: nothing to load")
            return None
        raise
    except InvalidInput as e:
        quarantine.quarantine_manifest(bucket, quarantine.PROCESSED, bucket, run_id, str(e), log)
        with transaction(conn):
            record_run(conn, run_id, {})
        return RunResult(run_id, {}, timer.seconds, quarantined=1)

    rows: dict[str, int] = {}
    trusted, hostile = manifests.entries(manifest, run_id, LOADABLE, "parquet")
    parted = [e for e in trusted if e.part is not None]
    if parts.loads_whole(conn, run_id, parted):
        parted = []
    tables = _table_files([e for e in trusted if e not in parted])
    staged = _stage_parts(conn, bucket, run_id, parted, log) if parted else {}
    if staged is None:
        return None
    quarantined = 0
    if hostile:
        quarantine.quarantine_manifest(bucket, quarantine.PROCESSED, bucket, run_id,
                                       manifests.rejection_reason(hostile), log)
        quarantined += 1
    with transaction(conn):
        present, direct, partial, files = set(), {}, set(), 0
        staged_tables = [LOADABLE[name] for name in sorted({e.table for e in parted})]
        loaded = [*(t.name for t in staged_tables), *(f.table.name for f in tables)]
        empty = merge.empty_tables(conn, [*(n for n in loaded if n in DIRECT_LOADABLE), *(d.name for d in DIMENSIONS)])
        bulk.lock_all(conn, sorted(empty))
        for table in staged_tables:  # straight in when empty, else into the temp table a whole file would fill
            of_table = [s for (name, _), s in staged.items() if name == table.name]
            quarantined += sum(s.quarantined for s in of_table)
            files += sum(not s.quarantined for s in of_table)
            if any(s.quarantined for s in of_table):
                partial.add(table.name)
            if not all(s.quarantined for s in of_table):
                moved = parts.fill_direct(conn, table, run_id, sum(s.rows for s in of_table)) \
                    if table.name in empty else None
                if moved is None:
                    parts.fill_temp(conn, table, run_id)
                else:
                    direct[table.name] = moved
                present.add(table.name)
        with closing(downloaded(bucket, [key for f in tables for key in f.keys])) as downloads:  # /tmp emptied after
            for table_files in tables:
                name = table_files.table.name
                copied = copy_table(conn, bucket, table_files, downloads, run_id if name in empty else None)
                for key, why in copied.refused:
                    quarantine.quarantine_file(bucket, key, bucket, run_id, why, quarantine.QUARANTINED_FILE, log)
                quarantined += len(copied.refused)
                files += len(table_files.keys) - len(copied.refused)
                if copied.refused:
                    partial.add(name)
                if copied.loaded(len(table_files.keys)):
                    present.add(name)
                    if copied.direct:
                        direct[name] = copied.rows
        states = [t for t in STATE_TABLES if t.name in present]
        for state in states:
            rows[state.name] = direct[state.name] if state.name in direct else merge.merge_state(conn, state, run_id)
        sources = {t.source for t in states}
        whole = {t.source for t in states if t.name in direct}
        for dimension in DIMENSIONS:
            new_rows = direct.get(state_table(dimension.source).name, 0) if dimension.name in empty else 0
            with bulk.rebuilt(conn, dimension.name, new_rows):
                rows[dimension.name] = merge.merge_dimension(conn, dimension, sources, whole)
        for fact in FACTS:
            if fact.name in present:
                rows[fact.name] = direct[fact.name] if fact.name in direct else \
                    merge.insert_fact_versions(conn, fact, run_id)
        for fact in API_FACTS:
            if fact.name in present:
                rows[fact.name] = merge_rates(conn, fact, run_id)
        for fact in EVENT_FACTS:
            if fact.name in present:
                rows[fact.name] = deliveries.insert_events(conn, fact, run_id)
        for log_table in DELETE_LOGS:
            if log_table.name in present:
                rows[log_table.name] = deletes.record_deletes(conn, log_table, run_id)
            for name in sorted(manifests.complete_tables(manifest, deletes.ABSENCE_CHECKED)):
                if name in partial:  # a quarantined file's rows are not in the run: absent proves nothing
                    log.warning("a table held whole but with a quarantined file: not checked for deletes",
                                table=name)
                    continue
                rows[log_table.name] = rows.get(log_table.name, 0) + deletes.record_absent(
                    conn, log_table, LOADABLE[name], run_id, loaded=name in present, direct=name in direct)
        rows[DIM_DATE.name] = merge.seed_calendar(conn, today or datetime.now(timezone.utc).date())
        if DIM_DATE.name in present:
            rows[DIM_DATE.name] += merge.insert_dates(conn)
        rows = {table: n for table, n in sorted(rows.items()) if n}
        if staged_tables:
            parts.clear(conn, run_id, staged_tables)
        record_run(conn, run_id, rows)
        crash_point("load.before_commit")
    crash_point("load.after_commit")
    result = RunResult(run_id, rows, timer.seconds, files=files, quarantined=quarantined)
    log.info("run loaded", rows=rows, quarantined=quarantined, seconds=result.seconds, direct=sorted(direct))
    return result


def _table_files(entries: list[manifests.FileEntry]) -> list[TableFiles]:
    """The run's files grouped by table, in manifest order; a table in parts has them in part order."""
    by_table: dict[str, list[manifests.FileEntry]] = {}
    for entry in entries:
        by_table.setdefault(entry.table, []).append(entry)
    return [TableFiles(LOADABLE[name], tuple(e.key for e in sorted(of, key=lambda e: e.part or 0)),
                       sum(e.rows for e in of)) for name, of in by_table.items()]


def _stage_parts(conn: Connection, bucket: str, run_id: str, parted: list[manifests.FileEntry], log: StageLog
                 ) -> dict[tuple[str, int], parts.Staged] | None:
    """Every part of the run staged (load/parts.py), as the staging ledger has them; None when the
    parts not staged yet were handed to other invocations (`fanout`) and are not staged when it
    returns: the one that stages the last part publishes the run, or a later sweep does. With no
    fan-out, this call stages them in turn.
    """
    pending = parts.unstaged(conn, run_id, parted)
    if pending and fan_out(STAGE, [PartRequest(run_id, p.table, p.part) for p in pending]):
        # The local fan-out returns once its part processes have ended (they leave the publishing to
        # this caller, which holds the lock); Lambda's returns at once, and a part invocation publishes.
        pending = parts.unstaged(conn, run_id, parted)
        if pending:
            log.info("parts handed to other invocations", parts=len(pending))
            return None
    for part in pending:
        parts.stage_part(conn, bucket, run_id, part, LOADABLE[part.table], log)
    staged = parts.staged_parts(conn, run_id)
    missing = [f"{p.table} part {p.part}" for p in parted if (p.table, p.part) not in staged]
    if missing:  # the caller holds the loaders' lock and found the run not loaded: never expected
        raise LoadFailed(f"parts not staged: {', '.join(missing[:5])}")
    return staged
