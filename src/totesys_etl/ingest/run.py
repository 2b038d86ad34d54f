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
from dataclasses import dataclass

from pg8000.native import DatabaseError, InterfaceError

from totesys_etl import lake
from totesys_etl.adapters import postgres, s3
from totesys_etl.config import Settings
from totesys_etl.errors import SourceUnavailable, describe
from totesys_etl.faults import crash_point
from totesys_etl.ingest.extract import changes_query, extract_table, take_snapshot
from totesys_etl.ingest.lakeio import lake_call
from totesys_etl.ingest.watermark import OVERLAP, Watermark, format_cutoff, previous_watermark
from totesys_etl.logs import StageLog, Timer
from totesys_etl.schema import SOURCE_TABLES

#: Uploads run beside the next table's COPY; at most this many CSVs wait on disk at once.
MAX_PENDING_UPLOADS = 2


@dataclass(frozen=True)
class IngestResult:
    run_id: str
    rows: dict[str, int]
    files: int
    seconds: float

    def summary(self) -> dict:
        """The handler's return value (the issue's contract)."""
        return {"stage": "ingest", "run_id": self.run_id, "rows": dict(self.rows), "files": self.files,
                "seconds": self.seconds}


def ingest(settings: Settings, log: StageLog | None = None) -> IngestResult:
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
            manifest = _extract(conn, bucket, previous, folder, pool, log)
    finally:
        postgres.close_quietly(conn)
    if manifest["files"]:
        crash_point("ingest.before_manifest")
    key = lake.manifest_key(manifest["run_id"])
    with lake_call(bucket, key):
        lake.write_manifest(bucket, manifest["run_id"], manifest)
    crash_point("ingest.after_manifest")
    result = IngestResult(manifest["run_id"], manifest["rows"], len(manifest["files"]), timer.seconds)
    log.info("ingest run written", files=result.files, rows=sum(result.rows.values()), seconds=result.seconds,
             previous_run_id=manifest["previous_run_id"])
    return result


def _extract(conn, bucket: str, previous: Watermark | None, folder: str, pool: ThreadPoolExecutor,
             log: StageLog) -> dict:
    """Read every table's changes in one REPEATABLE READ READ ONLY transaction, uploading as it goes;
    the run's manifest once every upload has finished."""
    pending: list[Future] = []
    files: dict[str, dict] = {}
    rows: dict[str, int] = {}
    try:
        conn.run("SET DateStyle = 'ISO, MDY'")  # the CSV's timestamps: YYYY-MM-DD HH:MM:SS[.ffffff]
        with postgres.transaction(conn, "REPEATABLE READ", read_only=True):
            cut = take_snapshot(conn)
            run_id = lake.run_id_at(cut.now)
            if previous is not None and previous.run_id >= run_id:
                # A manifest dated after this run (a stray or forged key, a clock gone wrong) is
                # never "the previous run": take the newest one before this run instead.
                log.warning("the newest manifest is dated after this run: ignored", previous_run_id=previous.run_id)
                previous = previous_watermark(bucket, log, before=run_id)
            if previous is not None and previous.snapshot.xmax > cut.snapshot.xmax:
                log.warning("the source's transaction ids went backwards (a restored or replaced "
                            "database?): reading every row", previous_run_id=previous.run_id)
                previous = None
            log.fields["run_id"] = run_id
            for table in SOURCE_TABLES:
                timer = Timer()
                path = os.path.join(folder, f"{table.name}.csv")
                rows[table.name] = extract_table(conn, changes_query(table, previous, cut.snapshot), path)
                log.info("table extracted", table=table.name, rows=rows[table.name], seconds=timer.seconds)
                if rows[table.name]:
                    key = lake.table_key(table.name, run_id, "csv")
                    files[table.name] = {"key": key, "rows": rows[table.name], "columns": table.column_names}
                    pending = _wait_below(pending, MAX_PENDING_UPLOADS)
                    pending.append(pool.submit(_upload, bucket, key, path))
                else:
                    os.remove(path)
    except (DatabaseError, InterfaceError) as e:
        raise SourceUnavailable(f"reading the source failed: {describe(e)}") from None
    _wait_below(pending, 1)
    return {"run_id": run_id, "stage": "ingest", "format": 1,
            "previous_run_id": previous.run_id if previous else None,
            "snapshot": str(cut.snapshot), "cutoff": format_cutoff(cut.cutoff),
            "overlap_seconds": int(OVERLAP.total_seconds()), "files": files, "rows": rows}


def _upload(bucket: str, key: str, path: str) -> None:
    try:
        with lake_call(bucket, key):
            s3.upload_file_create_only(bucket, key, path)
    finally:
        os.remove(path)


def _wait_below(pending: list[Future], limit: int) -> list[Future]:
    """Wait for the oldest uploads until fewer than `limit` are pending; re-raise an upload's error."""
    while len(pending) >= limit:
        pending.pop(0).result()
    return pending
