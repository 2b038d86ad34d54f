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
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from totesys_etl import calendar, lake, quarantine, runs
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.errors import InvalidInput, ProcessFailed, is_missing
from totesys_etl.events import Invocation
from totesys_etl.faults import crash_point
from totesys_etl.logs import StageLog, Timer
from totesys_etl.manifest import FileEntry
from totesys_etl.process import read, transform
from totesys_etl.process import rows as rows_of
from totesys_etl.process.rows import HeldRows
from totesys_etl.runs import RunResult
from totesys_etl.schema import DIM_DATE, INGESTED_TABLES, SOURCE_TABLES, Table, ingested_table

STAGE = "process"
#: The processor's low-water mark in the processed bucket: every run up to it is processed.
MARK_PREFIX = "_state/process_mark/"
#: Files of a run processed at once: one file's S3 transfer overlaps another's parsing (pyarrow
#: and the network both release the GIL). Memory grows by one CSV block and one batch per worker.
FILE_WORKERS = 4
#: Parquet's dictionary encoding, off: the lake's big columns (ids, times, stamps, amounts) are nearly
#: all distinct, where building a dictionary per row group cost half the writer's CPU and gave larger
#: files than plain values under snappy (100,000 orders: 14.4 MB against 12.9 MB, readers no slower).
DICTIONARY = False
#: Each data page carries a CRC32, which the loader verifies (load/files.py `open_parquet`): a damaged
#: page is then quarantined instead of loading wrong values. 1M rows of four columns: 0.078 CPU s to
#: write against 0.074 without, 0.06 s to read verified.
PAGE_CHECKSUMS = True


def process_run(settings: Settings, run_id: str, log: StageLog | None = None) -> RunResult | None:
    """Process one ingested run; None if it is already processed (or its manifest does not exist).

    Returns the run's `RunResult` (rows per output table, files, quarantined entries). Bad input
    is quarantined (a bad row alone, a file only when it cannot be read at all) and the run goes
    on; only a failure to do the work (S3 down, memory) raises, and then nothing is quarantined.
    """
    if not lake.RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    log = (log or StageLog(STAGE)).bind(run_id=run_id)
    if lake.manifest_exists(settings.processed_bucket, run_id):
        log.info("run already processed; nothing to do")
        return None
    timer = Timer()
    quarantined: list[dict] = []
    complete: set[str] = set()
    entries = manifest_entries(settings, run_id, log, quarantined, complete)
    if entries is None:
        return None
    if any(e.part is not None for e in entries):  # a run in parts (contract §4)
        from totesys_etl.process import parts  # parts.py builds on this module's file processing
        return parts.process_parted_run(settings, run_id, entries, quarantined, complete, timer, log)
    with tempfile.TemporaryDirectory(prefix="totesys-process-") as folder:
        outputs, dates = process_files(settings, run_id, entries, folder, quarantined, complete, log)
        if len(dates):
            date_batches = calendar.date_rows(dates).to_batches()
            outputs[DIM_DATE.name] = write_parquet(settings, run_id, DIM_DATE, date_batches, folder, log)
    return finish_run(settings, run_id, outputs, quarantined, complete, timer, log)


def finish_run(settings: Settings, run_id: str, outputs: dict[str, dict], quarantined: list[dict],
               complete: set[str], timer: Timer, log: StageLog) -> RunResult:
    """Write the run's processed manifest (create-only: it appears once, whoever writes it) last."""
    manifest = manifests.processed_manifest(run_id, outputs, quarantined,
                                            [transform.output_table(t).name for t in complete])
    crash_point("process.before_manifest")
    created = manifests.write(settings.processed_bucket, manifest)
    crash_point("process.after_manifest")
    rows = {table: entry["rows"] for table, entry in manifest["files"].items()}
    held = manifests.quarantined_count(quarantined)
    log.info("run processed" if created else "run processed; another processor wrote its manifest first",
             rows=rows, quarantined=held, seconds=timer.seconds)
    return RunResult(run_id, rows, timer.seconds, files=len(manifest["files"]), quarantined=held)


def process_files(settings: Settings, run_id: str, entries: list[FileEntry], folder: str, quarantined: list[dict],
                  complete: set[str], log: StageLog) -> tuple[dict[str, dict], pa.Array]:
    """Process `entries` (files of one run, none of them a part) side by side: their output
    entries by warehouse table and the distinct dates they refer to. What is held back is added to
    `quarantined`, and its table leaves `complete`."""
    outputs: dict[str, dict] = {}
    dates = calendar.distinct_dates([])
    with ThreadPoolExecutor(FILE_WORKERS) as pool:
        # Largest first, so the long file starts at once; results are taken in table order.
        largest_first = sorted(range(len(entries)), key=lambda i: -entries[i].rows)
        futures = {i: pool.submit(file_outcome, settings, run_id, entries[i], f"{folder}/{i}", log)
                   for i in largest_first}
        # Every file first: a transient failure in any of them raises here, before anything is
        # quarantined, so a run that fails leaves no quarantine for its retry to contradict.
        outcomes = [futures[i].result() for i in range(len(entries))]
    for entry, (written, file_dates, hold) in zip(entries, outcomes):
        if hold is not None:
            quarantined.append(hold())
            complete.discard(entry.table)  # a row held back is not a row deleted
        if written:
            outputs[transform.output_table(entry.table).name] = written
        dates = calendar.distinct_dates([dates, file_dates])
    return outputs, dates


def manifest_entries(settings: Settings, run_id: str, log: StageLog, quarantined: list[dict],
                     complete: set[str] | None = None) -> list[FileEntry] | None:
    """The run's trustworthy file entries; a corrupt or hostile manifest is quarantined on the way.

    A corrupt manifest gives no entries (the run still gets a processed manifest, so marks and the
    loader move past it). None when the manifest does not exist at all (an event for a deleted key).
    """
    key = lake.manifest_key(run_id)
    try:
        manifest = manifests.read(settings.ingest_bucket, run_id)
    except ClientError as e:
        if is_missing(e):
            log.warning("no ingested manifest for this run; nothing to do", key=key)
            return None
        raise
    except InvalidInput as e:
        quarantined.append(quarantine.quarantine_manifest(settings.ingest_bucket, quarantine.INGESTED,
                                                          settings.processed_bucket, run_id, str(e), log))
        return []
    entries, rejected = manifests.entries(manifest, run_id, {t.name for t in INGESTED_TABLES}, "csv")
    if rejected:
        quarantine.quarantine_manifest(settings.ingest_bucket, quarantine.INGESTED, settings.processed_bucket, run_id,
                                       manifests.rejection_reason(rejected), log)
        quarantined.extend(manifests.rejection_entries(rejected, run_id, quarantine.QUARANTINED_MANIFEST))
    elif complete is not None:  # the source tables this run holds whole (contract §10 snapshot)
        complete.update(manifests.complete_tables(manifest, {t.name for t in SOURCE_TABLES}))
    return entries


def file_outcome(settings: Settings, run_id: str, entry: FileEntry, folder: str, log: StageLog
                 ) -> tuple[dict | None, pa.Array, Callable[[], dict] | None]:
    """One file's (output entry, dates, quarantine to do): a bad file or bad rows are found here, in
    the worker, and quarantined by the caller once every file of the run is through."""
    os.mkdir(folder)
    try:
        written, dates, held = _process_file(settings, run_id, entry, folder, log)
    except InvalidInput as e:
        reason = str(e)

        def quarantine_file() -> dict:
            return {"table": entry.table, **quarantine.quarantine_file(
                settings.ingest_bucket, entry.key, settings.processed_bucket, run_id, reason,
                quarantine.QUARANTINED_FILE, log)}
        return None, calendar.distinct_dates([]), quarantine_file
    if held.count:
        return written, dates, lambda: quarantine.hold_rows(settings.processed_bucket, run_id, entry.table,
                                                            entry.key, held, log)
    return written, dates, None


def _process_file(settings: Settings, run_id: str, entry: FileEntry, folder: str, log: StageLog
                  ) -> tuple[dict | None, pa.Array, HeldRows]:
    """Download, check and transform one CSV into its output; InvalidInput if it cannot be read at all.

    The file is read with ordinary blocks; one that does not parse in them may hold a record too
    big for them, so it is scanned once (`read.scan`) and read again with blocks that fit, its
    records with a value over the limit held back unparsed. Nothing is uploaded until the whole
    file has been read and its row count checked.
    """
    table = ingested_table(entry.table)
    path = os.path.join(folder, "input.csv")  # a fixed name: a key is never a path
    try:
        s3.download(settings.ingest_bucket, entry.key, path)
    except ClientError as e:
        if is_missing(e):
            raise InvalidInput(f"{entry.table} CSV named by the manifest cannot be read") from None
        raise
    try:
        read.check_header(path, table)
        try:
            return _read_file(settings, run_id, entry, path, read.Layout(), folder, log)
        except read.NeedsScan:
            log.info(f"{entry.table} does not parse in {read.CSV_BLOCK_BYTES:,}-byte blocks; scanning its records",
                     table=entry.table)
        return _read_file(settings, run_id, entry, path, read.scan(path, table.column_names), folder, log)
    finally:
        os.remove(path)


def _read_file(settings: Settings, run_id: str, entry: FileEntry, path: str, layout: read.Layout, folder: str,
               log: StageLog) -> tuple[dict | None, pa.Array, HeldRows]:
    """One reading of a downloaded CSV with `layout`: the fast path, and the careful one if a row
    does not fit (a NeedsScan from either leaves nothing behind: the caller reads it again)."""
    output = transform.output_table(entry.table)
    table = ingested_table(entry.table)
    held = HeldRows(os.path.join(folder, f"held{'-scanned' if layout.scanned else ''}.csv"), table.column_names,
                    path, layout.oversized)
    try:
        try:
            seen: list[pa.Array] = []
            batches = _dated(output, _clean_batches(path, table, output, entry.rows, layout), seen)
            written = write_parquet(settings, run_id, output, batches, folder, log, entry.part)
            return written, calendar.distinct_dates(seen), held
        except read.NotClean:
            log.info(f"{entry.table} has rows that do not fit; checking it row by row", table=entry.table)
        seen = []
        batches = _dated(output, _careful_batches(path, table, output, entry.rows, held, layout), seen)
        written = write_parquet(settings, run_id, output, batches, folder, log, entry.part)
        return written, calendar.distinct_dates(seen), held
    finally:
        held.close()


def _clean_batches(path: str, table: Table, output: Table, expected_rows: int, layout: read.Layout
                   ) -> Iterator[pa.RecordBatch]:
    """The fast path: typed batches transformed as they are; NotClean at the first row that does not fit."""
    rows = len(layout.oversized)
    for batch in read.typed_batches(path, table, layout):
        out, problems = transform.transform(output, batch)
        if rows_of.any_rows(problems) or rows_of.any_rows(read.column_problems(table, batch)):
            raise read.NotClean()
        rows += batch.num_rows
        yield out
    read.check_count(table, rows, expected_rows)


def _careful_batches(path: str, table: Table, output: Table, expected_rows: int, held: HeldRows,
                     layout: read.Layout) -> Iterator[pa.RecordBatch]:
    """The careful path: each text batch converted and checked; rows that do not fit go to `held`.

    The row count compares good and held-back rows (oversized ones included) with the manifest's.
    """
    rows = 0
    for text in read.text_batches(path, table, layout):
        typed, problems = read.from_text(table, text)
        out, derived = transform.transform(output, typed)
        problems += derived
        if rows_of.any_rows(problems):
            bad = rows_of.bad_mask(problems, text.num_rows)
            held.add(text, bad, rows + 1, rows_of.reasons(problems, bad))
            out = out.filter(pc.invert(bad))
        rows += text.num_rows
        yield out
    read.check_count(table, rows + len(layout.oversized), expected_rows)


def _dated(output: Table, batches: Iterable[pa.RecordBatch], seen: list[pa.Array]) -> Iterator[pa.RecordBatch]:
    """Pass batches on, collecting the distinct dates they refer to in `seen` (kept compact)."""
    for batch in batches:
        seen.append(transform.dates_of(output, batch))
        if len(seen) > 64:  # keep the distinct dates compact, whatever the file's size
            seen[:] = [calendar.distinct_dates(seen)]
        yield batch


def write_parquet(settings: Settings, run_id: str, output: Table, batches: Iterable[pa.RecordBatch],
                  folder: str, log: StageLog, part: int | None = None) -> dict | None:
    """Write batches to a local Parquet file, then upload it create-only; None if there were no rows.

    The file is uploaded only after every batch is written, so a bad batch publishes nothing. Part
    `part` of a table in parts is written under its part's key, even with no rows: a processed
    table in parts has every part its ingested table has (contract §4 "Parts").
    """
    timer = Timer()
    path = os.path.join(folder, "output.parquet")
    rows = 0
    try:
        with pq.ParquetWriter(path, output.arrow_schema, compression="snappy", use_dictionary=DICTIONARY,
                              write_page_checksum=PAGE_CHECKSUMS) as writer:
            for batch in batches:
                if batch.num_rows:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        if not rows and part is None:
            return None
        key = lake.table_key(output.name, run_id, "parquet") if part is None else lake.part_key(
            output.name, run_id, "parquet", part)
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


def process_runs(settings: Settings, run_ids: Iterable[str], log: StageLog) -> list[RunResult]:
    """Process each run in order; a failed run never holds back the others, but fails the call."""
    results, failed = runs.handle_each(run_ids, lambda run_id: process_run(settings, run_id, log), log)
    runs.raise_if_failed(failed, ProcessFailed)
    return results


def sweep(settings: Settings, log: StageLog) -> list[RunResult]:
    """Process every ingested run after the low-water mark that has no processed manifest yet
    (`runs.sweep` moves the mark; it lives in the processed bucket under MARK_PREFIX)."""
    mark = lake.read_mark(settings.processed_bucket, MARK_PREFIX)
    ingested = lake.runs_after(settings.ingest_bucket, mark)
    done = set(lake.runs_after(settings.processed_bucket, mark))
    view = runs.Sweep(mark, ingested, done, [r for r in ingested if r not in done])
    return runs.sweep(view, lambda run_id: process_run(settings, run_id, log),
                      lambda new_mark: lake.write_mark(settings.processed_bucket, MARK_PREFIX, new_mark),
                      log, ProcessFailed)
