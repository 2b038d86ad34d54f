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
from totesys_etl.config import Settings
from totesys_etl.errors import RunIdCollision, SourceUnavailable, describe, lake_errors
from totesys_etl.faults import crash_point
from totesys_etl.ingest import extract
from totesys_etl.ingest import fx
from totesys_etl.ingest.watermark import OVERLAP, Watermark, format_cutoff, previous_watermark
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
            manifest, fx_inputs, previous_fx = _extract(conn, bucket, previous, settings.full_rescan_seconds,
                                                        folder, pool, log)
    finally:
        postgres.close_quietly(conn)
    _add_fx(settings, manifest, fx_inputs, previous_fx, log)
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


def _add_fx(settings: Settings, manifest: dict, inputs: fx.FxInputs | None, previous_fx: fx.FxMark,
            log: StageLog) -> None:
    """The FX part (contract §9), after the snapshot's transaction: its file and watermark in the manifest.
    With FX off, a watermark an earlier run stored is carried forward, and nothing else changes."""
    outcome = fx.FxOutcome(None, 0, previous_fx)
    if inputs is not None:
        outcome = fx.fetch(settings, manifest["run_id"], inputs, previous_fx, log)
        manifest["rows"][fx.FX_RATE.name] = outcome.rows
    if outcome.entry:
        manifest["files"][fx.FX_RATE.name] = outcome.entry
    manifest.update(outcome.fields())


def _collision(run_id: str) -> RunIdCollision:
    return RunIdCollision(f"another ingest already wrote objects of run {run_id}: stopped without a manifest, "
                          "so the next run reads these changes")


def _extract(conn, bucket: str, previous: Watermark | None, full_rescan_seconds: float, folder: str,
             pool: ThreadPoolExecutor, log: StageLog) -> tuple[dict, fx.FxInputs | None, fx.FxMark]:
    """Read every table's changes in one REPEATABLE READ READ ONLY transaction, uploading as it goes;
    the run's manifest once every upload has finished, what the FX part needs from the same snapshot
    (None when FX is off) and the previous run's FX watermark."""
    pending: list[Future] = []
    files: dict[str, dict] = {}
    rows: dict[str, int] = {}
    try:
        conn.run("SET DateStyle = 'ISO, MDY'")  # the CSV's timestamps: YYYY-MM-DD HH:MM:SS[.ffffff]
        extract.lock_snapshot_order(conn)
        with postgres.transaction(conn, "REPEATABLE READ", read_only=True):
            cut = extract.take_snapshot(conn)
            extract.release_snapshot_order(conn)
            run_id = lake.run_id_at(cut.now)
            if previous is not None and previous.run_id >= run_id:
                # A manifest dated after this run (a stray or forged key, a clock gone wrong) is
                # never "the previous run": take the newest one before this run instead.
                log.warning("the newest manifest is dated after this run: ignored", previous_run_id=previous.run_id)
                previous = previous_watermark(bucket, log, before=run_id)
            previous_fx = fx.FxMark(previous.fx, dict(previous.fx_behind)) if previous is not None else fx.FxMark()
            if previous is not None and previous.snapshot.xmax > cut.snapshot.xmax:
                log.warning("the source's transaction ids went backwards (a restored or replaced "
                            "database?): reading every row", previous_run_id=previous.run_id)
                previous = None
            log.fields["run_id"] = run_id
            plan = extract.plan_read(previous, cut, full_rescan_seconds)
            for table in SOURCE_TABLES:
                timer = Timer()
                path = os.path.join(folder, f"{table.name}.csv")
                key = lake.table_key(table.name, run_id, "csv")
                upload = s3.GrowingUpload(bucket, key, path)  # a big file goes up while COPY writes it
                try:
                    rows[table.name] = extract.extract_table(conn, extract.changes_query(table, plan), path,
                                                             upload.grown, s3.PART_SIZE)
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
            seen_query = extract.seen_query(list(SOURCE_TABLES), plan)
            seen = conn.run(seen_query)[0][0] if seen_query else "{}"
            unread = [u.to_json() for u in extract.unread_after(conn, plan)]
            fx_inputs = fx.read_inputs(conn, previous_fx) if fx.enabled() else None
    except (DatabaseError, InterfaceError) as e:
        raise SourceUnavailable(f"reading the source failed: {describe(e)}") from None
    _wait_below(pending, 1)
    watermark = {"snapshot": str(cut.snapshot), "cutoff": format_cutoff(cut.cutoff),
                 "overlap_seconds": int(OVERLAP.total_seconds()), "read": plan.mode, "seen": seen,
                 "unread": unread, "rescanned_at": extract.rescanned_at(plan, run_id)}
    manifest = manifests.ingest_manifest(run_id, previous.run_id if previous else None, watermark, files, rows)
    return manifest, fx_inputs, previous_fx


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
