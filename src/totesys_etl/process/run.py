"""Processing runs: an ingested run's CSVs become the lake's Parquet, then its processed manifest.

Everything a run writes is create-only under keys fixed by its `run_id`, and the processed
manifest comes last, so a rerun after a crash, a replayed event or a second processor at the same
time writes the same objects (or finds them there) and the manifest appears once. Nothing here is a
claim or a lock: the manifest's existence alone says a run is done.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from totesys_etl import calendar, lake
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.errors import EtlError, InvalidInput, describe, kind_of
from totesys_etl.events import Invocation
from totesys_etl.faults import crash_point
from totesys_etl.logs import StageLog, Timer
from totesys_etl.process import read, transform
from totesys_etl.schema import DIM_DATE, Table

STAGE = "process"
#: The processor's low-water mark in the processed bucket: every run up to it is processed.
MARK_PREFIX = "_state/process_mark/"
MANIFEST_FORMAT = 1
#: Files of a run processed at once: one file's S3 transfer overlaps another's parsing (pyarrow
#: and the network both release the GIL). Memory grows by one CSV block and one batch per worker.
FILE_WORKERS = 4


class ProcessFailed(EtlError):
    """One or more runs could not be processed (each was logged with its own error_kind)."""

    error_kind = "process_failed"


def process_run(settings: Settings, run_id: str, log: StageLog | None = None) -> dict | None:
    """Process one ingested run; None if it is already processed (or its manifest does not exist).

    Returns `{"run_id", "rows": {output table: rows}, "quarantined": n, "seconds"}`. Bad input
    is quarantined and the run goes on; only a failure to do the work (S3 down) raises.
    """
    if not lake.RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    log = (log or StageLog(STAGE)).bind(run_id=run_id)
    if lake.manifest_exists(settings.processed_bucket, run_id):
        log.info("run already processed; nothing to do")
        return None
    timer = Timer()
    quarantined: list[dict] = []
    entries = _manifest_entries(settings, run_id, log, quarantined)
    if entries is None:
        return None
    outputs: dict[str, dict] = {}
    dates = calendar.distinct_dates([])
    with tempfile.TemporaryDirectory(prefix="totesys-process-") as folder:
        with ThreadPoolExecutor(FILE_WORKERS) as pool:
            # Largest first, so the long file starts at once; results are taken in table order.
            largest_first = sorted(range(len(entries)), key=lambda i: -entries[i].rows)
            futures = {i: pool.submit(_file_outcome, settings, run_id, entries[i], f"{folder}/{i}", log)
                       for i in largest_first}
            for i, entry in enumerate(entries):
                written, file_dates, rejected = futures[i].result()
                if rejected:
                    quarantined.append(rejected)
                elif written:
                    outputs[transform.output_table(entry.table).name] = written
                dates = calendar.distinct_dates([dates, file_dates])
        if len(dates):
            date_batches = calendar.date_rows(dates).to_batches()
            outputs[DIM_DATE.name] = _write_parquet(settings, run_id, DIM_DATE, date_batches, folder, log)
    manifest = {"run_id": run_id, "stage": STAGE, "format": MANIFEST_FORMAT,
                "files": dict(sorted(outputs.items())), "quarantined": quarantined}
    crash_point("process.before_manifest")
    created = lake.write_manifest(settings.processed_bucket, run_id, manifest)
    crash_point("process.after_manifest")
    rows = {table: entry["rows"] for table, entry in manifest["files"].items()}
    log.info("run processed" if created else "run processed; another processor wrote its manifest first",
             rows=rows, quarantined=len(quarantined), seconds=timer.seconds)
    return {"run_id": run_id, "rows": rows, "quarantined": len(quarantined), "seconds": timer.seconds}


def _manifest_entries(settings: Settings, run_id: str, log: StageLog, quarantined: list[dict]
                      ) -> list[read.FileEntry] | None:
    """The run's trustworthy file entries; a corrupt or hostile manifest is quarantined on the way.

    A corrupt manifest gives no entries (the run still gets a processed manifest, so marks and the
    loader move past it). None when the manifest does not exist at all (an event for a deleted key).
    """
    key = lake.manifest_key(run_id)
    try:
        manifest = lake.read_manifest(settings.ingest_bucket, run_id)
    except ClientError as e:
        if lake.is_missing(e):
            log.warning("no ingested manifest for this run; nothing to do", key=key)
            return None
        raise
    except InvalidInput as e:
        quarantined.append(lake.quarantine(settings.ingest_bucket, key, settings.processed_bucket, run_id, str(e),
                                           lake.QUARANTINED_MANIFEST, log))
        return []
    entries, rejected = read.manifest_entries(manifest, run_id)
    if rejected:
        reason = "; ".join(f"{r.reason} ({r.key!r})" for r in rejected)
        lake.quarantine(settings.ingest_bucket, key, settings.processed_bucket, run_id, reason,
                        lake.QUARANTINED_MANIFEST, log)
        quarantined.extend({"key": r.key, "reason": r.reason, "error_kind": lake.QUARANTINED_MANIFEST}
                           for r in rejected)
    return entries


def _file_outcome(settings: Settings, run_id: str, entry: read.FileEntry, folder: str, log: StageLog
                  ) -> tuple[dict | None, pa.Array, dict | None]:
    """One file's (output entry, dates, quarantine entry): bad input is quarantined here, in the worker."""
    os.mkdir(folder)
    try:
        written, dates = _process_file(settings, run_id, entry, folder, log)
    except InvalidInput as e:
        rejected = lake.quarantine(settings.ingest_bucket, entry.key, settings.processed_bucket, run_id, str(e),
                                   lake.QUARANTINED_FILE, log)
        return None, calendar.distinct_dates([]), rejected
    return written, dates, None


def _process_file(settings: Settings, run_id: str, entry: read.FileEntry, folder: str, log: StageLog
                  ) -> tuple[dict | None, pa.Array]:
    """Download, validate and transform one CSV into its output; InvalidInput if it must be quarantined.

    Nothing is uploaded until the whole file has been read and checked.
    """
    output = transform.output_table(entry.table)
    path = os.path.join(folder, "input.csv")  # a fixed name: a key is never a path
    try:
        s3.download(settings.ingest_bucket, entry.key, path)
    except ClientError as e:
        if lake.is_missing(e):
            raise InvalidInput(f"{entry.table} CSV named by the manifest cannot be read") from None
        raise
    seen: list[pa.Array] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in read.read_csv(path, entry.table, entry.rows):
            try:
                out = transform.transform(output, batch)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise InvalidInput(f"{entry.table} rows do not fit {output.name}: {e}") from None
            seen.append(transform.dates_of(output, out))
            if len(seen) > 64:  # keep the distinct dates compact, whatever the file's size
                seen[:] = [calendar.distinct_dates(seen)]
            yield out

    try:
        return _write_parquet(settings, run_id, output, batches(), folder, log), calendar.distinct_dates(seen)
    finally:
        os.remove(path)


def _write_parquet(settings: Settings, run_id: str, output: Table, batches: Iterable[pa.RecordBatch],
                   folder: str, log: StageLog) -> dict | None:
    """Write batches to a local Parquet file, then upload it create-only; None if there were no rows.

    The file is uploaded only after every batch is written, so a bad batch publishes nothing.
    """
    timer = Timer()
    path = os.path.join(folder, "output.parquet")
    rows = 0
    try:
        with pq.ParquetWriter(path, output.arrow_schema, compression="snappy") as writer:
            for batch in batches:
                if batch.num_rows:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        if not rows:
            return None
        key = lake.table_key(output.name, run_id, "parquet")
        created = s3.upload_file_create_only(settings.processed_bucket, key, path)
    finally:
        if os.path.exists(path):
            os.remove(path)
    log.info(f"wrote {output.name}", table=output.name, rows=rows, key=key, created=created,
             seconds=timer.seconds)
    crash_point("process.before_manifest")
    return {"key": key, "rows": rows}


def manifest_runs(settings: Settings, invocation: Invocation, log: StageLog) -> list[str]:
    """The run ids an S3 event names: ingested manifests only, each once, in run order."""
    run_ids, others = invocation.manifest_runs(settings.ingest_bucket)
    for obj in others:
        log.info("ignored an object that is not an ingested run manifest", bucket=obj.bucket, key=obj.key)
    return run_ids


def process_runs(settings: Settings, run_ids: Iterable[str], log: StageLog) -> list[dict]:
    """Process each run in order; a failed run never holds back the others, but fails the call."""
    results, failed = _process_each(settings, run_ids, log)
    _raise_if_failed(failed)
    return results


def sweep(settings: Settings, log: StageLog) -> list[dict]:
    """Process every ingested run after the low-water mark that has no processed manifest yet.

    Lists from the mark (never from the newest processed run: an older one may still be pending)
    and moves the mark past every settled run that is now done, even when a later run failed; never
    past a run id younger than `lake.SETTLE`, so a slow ingest or a corrupt manifest dated in the
    future cannot hide the runs that appear below it.
    """
    mark = lake.read_mark(settings.processed_bucket, MARK_PREFIX)
    ingested = lake.runs_after(settings.ingest_bucket, mark)
    done = set(lake.runs_after(settings.processed_bucket, mark))
    pending = [r for r in ingested if r not in done]
    results, failed = _process_each(settings, pending, log)
    done.update(r for r in pending if r not in failed)
    new_mark = lake.advance_mark(lake.settled(ingested), done)  # never past a run that may yet appear
    if new_mark and new_mark != mark:
        lake.write_mark(settings.processed_bucket, MARK_PREFIX, new_mark)
        log.info("moved the low-water mark", mark=new_mark)
    _raise_if_failed(failed)
    return results


def _process_each(settings: Settings, run_ids: Iterable[str], log: StageLog
                  ) -> tuple[list[dict], dict[str, str]]:
    """Each run's result; the runs that failed, each with a one-line reason."""
    results, failed = [], {}
    for run_id in run_ids:
        try:
            result = process_run(settings, run_id, log)
        except Exception as e:  # each run on its own: log it with its kind, carry on, fail at the end
            failed[run_id] = describe(e)
            log.bind(run_id=run_id).error(f"run could not be processed: {failed[run_id]}", error_kind=kind_of(e))
            continue
        if result is not None:
            results.append(result)
    return results, failed


def _raise_if_failed(failed: dict[str, str]) -> None:
    if failed:
        runs = ", ".join(f"{run_id} ({why})" for run_id, why in failed.items())
        error = ProcessFailed(f"{len(failed)} run(s) could not be processed: {runs}")
        error.logged = True  # each run was logged with its own error_kind
        raise error
