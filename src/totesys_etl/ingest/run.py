"""One ingest run: a consistent snapshot of the eleven tables' changes, CSVs, then the manifest.

Order is what makes a crash harmless: CSVs first (create-only, per-run keys), then
`_runs/<run_id>.json` last. Until the manifest exists the run does not exist: the
next run still starts from the old manifest and reads the same changes again, and downstream
ignores CSVs that no manifest names.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor

from pg8000.native import DatabaseError, InterfaceError

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import postgres, s3
from totesys_etl.config import Database, Settings
from totesys_etl.errors import RunIdCollision, SourceSchemaChanged, SourceUnavailable, describe, lake_errors
from totesys_etl.faults import crash_point
from totesys_etl.ingest import extract
from totesys_etl.ingest import fx
from totesys_etl.ingest import parts as parted
from totesys_etl.ingest import xid_state
from totesys_etl.ingest.identity import history_broken
from totesys_etl.ingest.watermark import (OVERLAP, Stopped, Watermark, format_cutoff, next_run_id,
                                          previous_watermark)
from totesys_etl.logs import StageLog, Timer
from totesys_etl.runs import RunResult
from totesys_etl.schema import SOURCE_TABLES

#: Uploads run beside the next table's COPY; at most this many CSVs wait on disk at once.
MAX_PENDING_UPLOADS = 2


def ingest(settings: Settings, log: StageLog | None = None) -> RunResult:
    """Ingest every change since the previous run into `settings.ingest_bucket`.

    `log` is bound to the run once its id is known (from the database's clock), so a caller that
    logs a failure with it names the run. Raises SourceUnavailable, SecretError, LakeUnavailable.
    """
    log = log or StageLog("ingest")
    timer = Timer()
    bucket = settings.ingest_bucket
    previous = previous_watermark(bucket, log)
    conn = postgres.connect(settings.source, application_name="totesys-etl-ingest")
    try:
        with tempfile.TemporaryDirectory(prefix="totesys-ingest-") as folder, \
                ThreadPoolExecutor(max_workers=MAX_PENDING_UPLOADS) as pool:
            manifest, fx_inputs, previous_fx = _extract(conn, settings.source, bucket, previous,
                                                        settings.full_rescan_seconds, folder, pool, log)
    finally:
        postgres.close_quietly(conn)
    fx.add_to_manifest(settings, manifest, fx_inputs, previous_fx, log)
    if manifest["files"]:
        crash_point("ingest.before_manifest")
    key = lake.manifest_key(manifest["run_id"])
    with lake_errors(bucket, key):
        if not manifests.write(bucket, manifest) and not s3.holds(bucket, key, body=s3.json_body(manifest)):
            raise _collision(manifest["run_id"])
    crash_point("ingest.after_manifest")
    result = RunResult(manifest["run_id"], manifest["rows"], timer.seconds, files=len(manifest["files"]))
    log.info("ingest run written", files=result.files, rows=sum(result.rows.values()), seconds=result.seconds,
             previous_run_id=manifest["previous_run_id"], read=manifest["read"])
    return result


def _collision(run_id: str) -> RunIdCollision:
    return RunIdCollision(f"another ingest already wrote objects of run {run_id}: stopped without a manifest, "
                          "so the next run reads these changes")


def _extract(conn, source: Database, bucket: str, previous: Watermark | None, full_rescan_seconds: float,
             folder: str, pool: ThreadPoolExecutor, log: StageLog) -> tuple[dict, fx.FxInputs | None, fx.FxMark]:
    """Read every table's changes in one REPEATABLE READ READ ONLY transaction, uploading as it goes;
    the run's manifest once every upload has finished, what the FX part needs from the same snapshot
    (None when FX is off) and the previous run's FX watermark."""
    pending: list[Future] = []
    readers: parted.Readers | None = None
    files: dict[str, dict] = {}
    rows: dict[str, int] = {}
    try:
        running, next_before = extract.in_progress_before(conn, previous)
        extract.begin_snapshot(conn)
        try:
            conn.run("SET LOCAL DateStyle = 'ISO, MDY'")  # the CSV's timestamps: YYYY-MM-DD HH:MM:SS[.ffffff]
            cut, previous, previous_fx, run_id = _cut(conn, bucket, previous, running, next_before, log)
            plan, reads, stopped, added = _table_plans(conn, previous, cut, full_rescan_seconds, log)
            splits = _splits(conn, reads, log)
            readers = parted.start(conn, source, bucket, run_id, splits, folder, log) if splits else None
            for table in SOURCE_TABLES:
                if table.name not in reads or table.name in splits:
                    rows[table.name] = 0
                    continue
                timer = Timer()
                path = os.path.join(folder, f"{table.name}.csv")
                key = lake.table_key(table.name, run_id, "csv")
                upload = s3.GrowingUpload(bucket, key, path)  # a big file goes up while COPY writes it
                try:
                    rows[table.name] = extract.extract_table(conn, extract.changes_query(table, reads[table.name]),
                                                             path, upload.grown, s3.PART_SIZE)
                except BaseException:
                    upload.abandon()
                    raise
                log.info("table extracted", table=table.name, rows=rows[table.name], seconds=timer.seconds)
                if rows[table.name]:
                    files[table.name] = {"key": key, "rows": rows[table.name], "columns": table.column_names}
                    pending = _wait_below(pending, MAX_PENDING_UPLOADS)
                    pending.append(pool.submit(_upload, upload, run_id))
                else:
                    upload.abandon()
                    os.remove(path)
            unread = [u.to_json() for u in extract.unread_after(plan)]
            fx_inputs = fx.read_inputs(conn, previous_fx) if fx.enabled() else None
            conn.run("COMMIT")  # read only: ending it releases the snapshot lock
        except BaseException:
            postgres.rollback_quietly(conn)
            if readers is not None:
                readers.stop()
            raise
        if readers is not None:  # each reader holds the imported snapshot on its own
            parted_files, parted_rows = parted.finish(readers, splits, run_id)
            files.update(parted_files)
            rows.update(parted_rows)
    except (DatabaseError, InterfaceError) as e:
        raise SourceUnavailable(f"reading the source failed: {describe(e)}") from None
    _wait_below(pending, 1)
    watermark = {"snapshot": str(cut.snapshot), "cutoff": format_cutoff(cut.cutoff),
                 "overlap_seconds": int(OVERLAP.total_seconds()), "read": plan.mode, "seen": cut.seen,
                 "in_progress": cut.in_progress, "unread": unread,
                 "rescanned_at": extract.rescanned_at(plan, run_id),
                 "source_identity": cut.identity.to_json() if cut.identity else None}
    if stopped:
        watermark["stopped"] = {s.table: s.to_json() for s in stopped}
    if added:
        watermark["new_columns"] = added
    watermark = xid_state.spill(bucket, run_id, watermark)  # the id sets as text, or beside the manifest if large
    manifest = manifests.ingest_manifest(run_id, previous.run_id if previous else None, watermark, files, rows)
    return manifest, fx_inputs, previous_fx


def _cut(conn, bucket: str, previous: Watermark | None, running, next_before: int, log: StageLog
         ) -> tuple[extract.Cut, Watermark | None, fx.FxMark, str]:
    """The run's cut, the previous run it reads from (None: read everything), the previous FX
    watermark and the run id; `log` is bound to the run.

    The ids asked about before the snapshot (`running`) were the previous run's to ask about: when
    the previous run turns out to be another (a stray manifest dated after this run) or not this
    history at all (a restore, a failover: identity.py), none of them is trusted and every id from
    the snapshot's xmin on counts as in progress, so this run reads only what had certainly ended
    and the next run reads the rest."""
    cut = extract.take_snapshot(conn, running, next_before)
    asked_of, (previous, run_id) = previous, _previous_and_run_id(bucket, previous, cut, log)
    if previous is not asked_of:
        cut = extract.everything_in_progress(cut)
    # The FX watermark survives a restore: rates come from the API, not from the source.
    previous_fx = fx.FxMark(previous.fx, dict(previous.fx_behind)) if previous is not None else fx.FxMark()
    broken = previous and history_broken(previous.identity, cut.identity, previous.snapshot.xmax, cut.snapshot.xmax)
    if broken:
        log.warning(f"the source is not the history the previous run read: {broken}; reading every row",
                    previous_run_id=previous.run_id)
        previous, cut = None, extract.everything_in_progress(cut)  # its stopped tables are read in full too
    log.fields["run_id"] = run_id
    return cut, previous, previous_fx, run_id


def _previous_and_run_id(bucket: str, previous: Watermark | None, cut: extract.Cut, log: StageLog
                         ) -> tuple[Watermark | None, str]:
    """The previous run, and this run's id: after every totesys run in the lake, whatever the clock or
    the mode did (`next_run_id`). A previous manifest dated at or after that id lies more than
    MAX_CLOCK_STEP after the source's clock (a stray or forged key): never "the previous run"; the
    newest one before this run is."""
    run_id = next_run_id(bucket, cut.now, log)
    if previous is not None and previous.run_id >= run_id:
        log.warning("the newest manifest is dated after this run: ignored", previous_run_id=previous.run_id)
        previous = previous_watermark(bucket, log, before=run_id)
    return previous, run_id


def _table_plans(conn, previous: Watermark | None, cut: extract.Cut, full_rescan_seconds: float, log: StageLog
                 ) -> tuple[extract.Plan, dict[str, extract.Plan], list[Stopped], dict[str, list[str]]]:
    """The run's plan, how each table it reads is read, the tables stopped, and the columns the
    source added.

    A table the source no longer gives every declared column of is not read: one ERROR
    (`source_schema_changed`, naming table and columns) per run while it lasts, and the watermark
    of the last run that read it is carried in the manifest. Once the columns are back it is read
    from that watermark (every version since, and what was left unread then), and that run scans
    every table by transaction id, so no claim left unread is read twice. Every other table reads
    as the run's plan says. A column the source added is ignored and recorded (`new_columns`).
    """
    columns = postgres.table_columns(conn, [t.name for t in SOURCE_TABLES])
    stopped_before = {s.table: s for s in previous.stopped} if previous is not None else {}
    stopped, added, resumed = [], {}, {}
    for table in SOURCE_TABLES:
        present = columns.get(table.name, set())
        missing = [c for c in table.column_names if c not in present]
        extra = sorted(present - set(table.column_names))
        if extra:
            added[table.name] = extra
        prior = stopped_before.get(table.name)
        if missing:
            log.error(f"source table {table.name} lacks column(s) {', '.join(missing)}: {table.name} is not read "
                      "until they are back; every other table goes on", SourceSchemaChanged.error_kind,
                      table=table.name, columns=missing)
            stopped.append(Stopped(table.name, tuple(missing), prior.since if prior else previous))
        elif prior is not None:
            log.warning(f"source table {table.name} has its columns again: reading it from run "
                        f"{prior.since.run_id if prior.since else 'the beginning'}", table=table.name)
            resumed[table.name] = extract.plan_read(prior.since, cut, 0)
    plan = extract.plan_read(previous, cut, 0 if resumed else full_rescan_seconds)
    halted = {s.table for s in stopped}
    reads = {t.name: resumed.get(t.name, plan) for t in SOURCE_TABLES if t.name not in halted}
    return plan, reads, stopped, added


def _splits(conn, reads: dict[str, extract.Plan], log: StageLog) -> dict[str, parted.Split]:
    """The tables this run reads in parts (parts.py): only a first read of a table, and only one
    over `TOTESYS_PART_ROWS` rows under this snapshot."""
    limit, splits = parted.part_rows(), {}
    first = [t for t in SOURCE_TABLES if t.name in reads and reads[t.name].previous is None]
    sizes = parted.sizes(conn, first) if first else {}
    for table in first:
        found = parted.split(conn, table, extract.changes_query(table, reads[table.name]), limit,
                             sizes.get(table.name, (-1, 0)))
        if found is not None:
            log.info(f"{table.name} is read in {len(found.bounds)} parts", table=table.name, rows=found.rows,
                     parts=len(found.bounds))
            splits[table.name] = found
    return splits


def _upload(upload: s3.GrowingUpload, run_id: str) -> None:
    """Finish one CSV's create-only upload; a key already taken by other bytes means another
    ingest had this run id."""
    bucket, key, path = upload.bucket, upload.key, upload.path
    try:
        with lake_errors(bucket, key):
            # A key already holding these bytes is this run's own earlier attempt (S3 finished it,
            # the answer was lost and the SDK retried); anything else is another ingest's object.
            if not upload.finish() and not s3.holds(bucket, key, path=path):
                raise _collision(run_id)
    finally:
        os.remove(path)


def _wait_below(pending: list[Future], limit: int) -> list[Future]:
    """Wait for the oldest uploads until fewer than `limit` are pending; re-raise an upload's error."""
    while len(pending) >= limit:
        pending.pop(0).result()
    return pending
