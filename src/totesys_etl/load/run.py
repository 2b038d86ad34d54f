"""Loading processed runs into the warehouse: the plain function the Lambda handler calls.

`load(settings, run_ids)` connects, takes the loaders' advisory lock (waiting a bounded time,
else "deferred"), migrates, then loads each requested run, or sweeps for every processed run
the ledger lacks. `load_run` is one run in ONE transaction, ledger row included, so a crash at
any point leaves the run either wholly loaded or not at all (readme_files/design.md, "Loader").
"""
from __future__ import annotations

import os
from datetime import date, datetime, timezone
from typing import Iterable, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from totesys_etl import lake
from totesys_etl.adapters.postgres import (Connection, DatabaseError, InterfaceError, advisory_lock, close_quietly,
                                           connect, transaction)
from totesys_etl.config import Settings
from totesys_etl.errors import (EtlError, InvalidInput, LakeUnavailable, LoadFailed, WarehouseUnavailable,
                                describe)
from totesys_etl.faults import crash_point
from totesys_etl.load import merge
from totesys_etl.load.files import copy_file
from totesys_etl.load.ledger import LOADER_LOCK_KEY, is_loaded, load_mark, loaded_runs, record_run, set_mark
from totesys_etl.load.migrations import migrate
from totesys_etl.logs import StageLog, Timer
from totesys_etl.schema import DIM_DATE, DIMENSIONS, FACTS, STATE_TABLES, Table

STAGE = "load"
LOCK_WAIT_VARIABLE = "TOTESYS_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_WAIT_SECONDS = 60.0

#: The lake files a processed manifest may name, by table name: what the loader loads.
LOADABLE: dict[str, Table] = {t.name: t for t in (*STATE_TABLES, *FACTS, DIM_DATE)}


def lock_wait_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long a loader waits for another loader's lock before deferring (SPEC §3: bounded)."""
    env = os.environ if env is None else env
    return float(env.get(LOCK_WAIT_VARIABLE) or DEFAULT_LOCK_WAIT_SECONDS)


def warehouse_connection(settings: Settings | None = None) -> Connection:
    """A connection to the warehouse (URL, else its secret); WarehouseUnavailable without credentials."""
    settings = settings or Settings.from_env()
    return connect(settings.warehouse, application_name="totesys-etl-load")


def load(settings: Settings, run_ids: Iterable[str] | None = None, wait_seconds: float | None = None,
         today: date | None = None, log: StageLog | None = None) -> dict:
    """Load `run_ids` (or, if None, sweep for every pending run); the handler's result.

    Returns `{"stage", "status": "ok"|"deferred", "runs": [...], "seconds"}`; "runs" lists only
    the runs this call loaded. Raises an EtlError (already logged if it concerns one run) when
    work failed.
    """
    timer, log = Timer(), log or StageLog(STAGE)
    wait_seconds = lock_wait_seconds() if wait_seconds is None else wait_seconds
    run_ids = None if run_ids is None else sorted(set(run_ids))
    if run_ids == []:  # an event for objects that are not processed manifests: nothing to do
        return {"stage": STAGE, "status": "ok", "runs": [], "seconds": timer.seconds}
    conn = warehouse_connection(settings)
    try:
        if not advisory_lock(conn, LOADER_LOCK_KEY, wait_seconds):
            log.warning("another loader holds the lock: deferred to it", wait_seconds=wait_seconds)
            return {"stage": STAGE, "status": "deferred", "runs": [], "seconds": timer.seconds}
        applied = migrate(conn)
        if applied:
            log.info("warehouse migrated", versions=applied)
        if run_ids is None:
            runs = _sweep(conn, settings, log, today)
        else:
            runs = _load_each(conn, settings.processed_bucket, run_ids, log, today)
    except InterfaceError:
        raise WarehouseUnavailable("the warehouse connection was lost during the load") from None
    except DatabaseError as e:
        raise LoadFailed(f"warehouse: {describe(e)}") from None
    except (ClientError, BotoCoreError) as e:
        raise LakeUnavailable(describe(e)) from None
    finally:
        close_quietly(conn)
    return {"stage": STAGE, "status": "ok", "runs": runs, "seconds": timer.seconds}


def _sweep(conn: Connection, settings: Settings, log: StageLog, today: date | None) -> list[dict]:
    """Every processed run after the mark that the ledger lacks, in run_id order; then move the mark.

    The mark is the last run below which every *ingested* run is loaded, so a run ingested but
    not yet processed holds it back and a late processed run is still found by a later sweep. It
    never passes a run id younger than `lake.SETTLE`: a manifest may still appear below one (a slow
    ingest), and a corrupt manifest dated in the future must not hide the runs after it.
    """
    mark = load_mark(conn)
    ingested = lake.runs_after(settings.ingest_bucket, mark)
    processed = lake.runs_after(settings.processed_bucket, mark)
    candidates = sorted(set(ingested) | set(processed))
    done = loaded_runs(conn, candidates)
    runs = _load_each(conn, settings.processed_bucket, [r for r in processed if r not in done], log, today)
    done |= {r["run_id"] for r in runs}
    new_mark = lake.advance_mark(lake.settled(candidates), done)
    if new_mark and (mark is None or new_mark > mark):
        set_mark(conn, new_mark)
        log.info("low-water mark moved", mark=new_mark)
    return runs


def _load_each(conn: Connection, bucket: str, run_ids: list[str], log: StageLog, today: date | None
               ) -> list[dict]:
    """Load the runs in order; a run that fails is logged and the others still load.

    A newer run never waits for an older one that cannot load; the failure is raised at the end.
    """
    results, failed = [], {}
    for run_id in run_ids:
        run_log = log.bind(run_id=run_id)
        try:
            result = load_run(conn, bucket, run_id, run_log, today)
        except InterfaceError:
            raise
        except Exception as e:  # one run's failure must not stop the others; it is raised below
            error = e if isinstance(e, EtlError) else LoadFailed(describe(e))
            run_log.error(f"run not loaded: {error}", error_kind=error.error_kind)
            failed[run_id] = str(error)
            continue
        if result is not None:
            results.append(result)
    if failed:
        reasons = "; ".join(f"{run_id} ({reason})" for run_id, reason in failed.items())
        error = LoadFailed(f"{len(failed)} run(s) not loaded: {reasons}")
        error.logged = True
        raise error
    return results


def load_run(conn: Connection, bucket: str, run_id: str, log: StageLog, today: date | None = None
             ) -> dict | None:
    """Load one processed run in one transaction; None if it is already loaded (or has no manifest).

    Returns `{"run_id", "rows": {table: rows inserted or changed}, "quarantined", "seconds"}`.
    """
    timer = Timer()
    if is_loaded(conn, run_id):
        log.info("run already loaded: nothing to do")
        return None
    try:
        manifest = lake.read_manifest(bucket, run_id)
    except ClientError as e:
        if lake.is_missing(e):
            log.warning("no processed manifest for this run: nothing to load")
            return None
        raise
    except InvalidInput as e:
        lake.quarantine(bucket, lake.manifest_key(run_id), bucket, run_id, str(e), lake.QUARANTINED_MANIFEST, log)
        with transaction(conn):
            record_run(conn, run_id, {})
        return {"run_id": run_id, "rows": {}, "quarantined": 1, "seconds": timer.seconds}

    rows: dict[str, int] = {}
    trusted, hostile = lake.manifest_files(manifest, run_id, LOADABLE, "parquet")
    entries, rejected = [(name, key) for name, key, _entry in trusted], [reason for _t, _k, reason in hostile]
    quarantined = 0
    if rejected:
        lake.quarantine(bucket, lake.manifest_key(run_id), bucket, run_id, "; ".join(rejected),
                        lake.QUARANTINED_MANIFEST, log)
        quarantined += 1
    with transaction(conn):
        present = set()
        for name, key in entries:
            try:
                copy_file(conn, bucket, key, LOADABLE[name])
                present.add(name)
            except InvalidInput as e:
                lake.quarantine(bucket, key, bucket, run_id, str(e), lake.QUARANTINED_FILE, log)
                quarantined += 1
        states = [t for t in STATE_TABLES if t.name in present]
        for state in states:
            rows[state.name] = merge.merge_state(conn, state, run_id)
        sources = {t.source for t in states}
        for dimension in DIMENSIONS:
            rows[dimension.name] = merge.merge_dimension(conn, dimension, sources)
        for fact in FACTS:
            if fact.name in present:
                rows[fact.name] = merge.insert_fact_versions(conn, fact, run_id)
        rows[DIM_DATE.name] = merge.seed_calendar(conn, today or datetime.now(timezone.utc).date())
        if DIM_DATE.name in present:
            rows[DIM_DATE.name] += merge.insert_dates(conn)
        rows = {table: n for table, n in sorted(rows.items()) if n}
        record_run(conn, run_id, rows)
        crash_point("load.before_commit")
    crash_point("load.after_commit")
    result = {"run_id": run_id, "rows": rows, "quarantined": quarantined, "seconds": timer.seconds}
    log.info("run loaded", rows=rows, quarantined=quarantined, seconds=result["seconds"])
    return result
