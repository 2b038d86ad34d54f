"""A run in parts (contract §4 "Parts"): each part processed by an invocation of its own.

The invocation that meets the run (its manifest's event, or the sweep) processes the run's
unsplit files as any run's and records what they gave; it hands every part not yet processed to
the fan-out (`fanout.fan_out`), or processes them itself, `PART_WORKERS` at a time, when the
run is small enough for one invocation (`fanout.handles_whole`, `TOTESYS_WHOLE_RUN_ROWS`) or no
fan-out is configured. At 10M orders on two cores, twenty part processes took 29 s where the
unsplit path would take about 23: each paid its start-up, and two at a time shared the cores.

A part invocation (`{"totesys_part": ...}`) processes exactly its ingested part into the processed
part of the same number (`lake.part_key`, create-only, written even when no row is left, so the
processed table has every part) and records what it gave.

Each record is this stage's own create-only state, one object per unit of work under
`_state/process_parts/<run_id>/`: a replayed part finds its record and does nothing twice. Whoever
finds every record of the run present (the last part to finish, or the sweep) writes dim_date from
the dates they list and then the processed manifest, create-only, so it appears once and only when
the run is fully processed. A lost or failed part invocation delays the run until the sweep, which
hands out the missing parts again; it never loses one. No record is a claim: two invocations of
one part write the same objects.
"""
from __future__ import annotations

import array
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from botocore.exceptions import ClientError

from totesys_etl import calendar, fanout, lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.errors import InvalidInput, ProcessFailed, is_missing, lake_errors, parse_json
from totesys_etl.events import PartRequest
from totesys_etl.logs import StageLog, Timer
from totesys_etl.manifest import FileEntry
from totesys_etl.process import run, transform
from totesys_etl.runs import RunResult
from totesys_etl.schema import DIM_DATE, INGESTED_TABLES

#: This stage's records of a run in parts, one per unit of work (the unsplit files, each part).
STATE_PREFIX = "_state/process_parts/"
#: Parts an invocation processes at once when it handles the run whole. Two, not the four files of
#: `run.FILE_WORKERS`: a part is up to TOTESYS_PART_ROWS rows, and four at a time took the
#: processor to 1,028 MB of RSS at 10M orders; two keep both cores busy (pyarrow and S3 release the GIL).
PART_WORKERS = 2
#: The record of a run's unsplit files (and of what its manifest's check held back).
FILES_RECORD = "files"


def record_key(run_id: str, name: str) -> str:
    return f"{STATE_PREFIX}{run_id}/{name}.json"


def part_name(table: str, part: int) -> str:
    return f"{table}.part{part:05d}"


def process_parted_run(settings: Settings, run_id: str, entries: list[FileEntry], quarantined: list[dict],
                       complete: set[str], timer: Timer, log: StageLog) -> RunResult | None:
    """Process a run that has parts (called by `run.process_run`); its `RunResult` once its processed
    manifest exists, None while parts handed to other invocations are still under way."""
    bucket = settings.processed_bucket
    recorded = _recorded(bucket, run_id)
    if FILES_RECORD not in recorded:
        with tempfile.TemporaryDirectory(prefix="totesys-process-") as folder:
            outputs, dates = run.process_files(settings, run_id, [e for e in entries if e.part is None], folder,
                                               quarantined, complete, log)
        _record(bucket, run_id, FILES_RECORD, {"outputs": outputs, "dates": _days(dates), "quarantined": quarantined,
                                               "complete": sorted(complete)})
    parts = [e for e in entries if e.part is not None]
    pending = [e for e in parts if part_name(e.table, e.part) not in recorded]
    whole = fanout.handles_whole(sum(e.rows for e in parts))
    if pending and not whole and fanout.fan_out(run.STAGE, [PartRequest(run_id, e.table, e.part) for e in pending]):
        log.info("parts handed to invocations of their own", parts=len(pending))
    else:  # small enough for this invocation, or no fan-out: PART_WORKERS parts at a time
        with ThreadPoolExecutor(max_workers=PART_WORKERS, thread_name_prefix="part") as workers:
            for done in [workers.submit(_process_part, settings, run_id, e, log) for e in pending]:
                done.result()  # the first failure fails the run (the others still finish)
    return _finish_if_done(settings, run_id, entries, timer, log)


def process_part(settings: Settings, request: PartRequest, log: StageLog) -> RunResult | None:
    """Handle one part request (a fan-out's event): its `RunResult` if this invocation found the run
    complete and wrote (or found) its manifest, else None. A request for a run, table or part the
    run's ingested manifest does not name is logged and ignored: the request is never trusted more."""
    run_id, timer = request.run_id, Timer()
    log = log.bind(run_id=run_id)
    if lake.manifest_exists(settings.processed_bucket, run_id):
        log.info("run already processed; nothing to do", table=request.table, part=request.part)
        return None
    entries = _trusted_entries(settings, run_id, log)
    entry = next((e for e in entries if (e.table, e.part) == (request.table, request.part)), None)
    if entry is None:
        log.warning("ignored a part request that the run's ingested manifest does not name", table=request.table,
                    part=request.part)
        return None
    if part_name(entry.table, entry.part) in _recorded(settings.processed_bucket, run_id):
        log.info("part already processed", table=entry.table, part=entry.part)
    else:
        _process_part(settings, run_id, entry, log)
    return _finish_if_done(settings, run_id, entries, timer, log)


def _trusted_entries(settings: Settings, run_id: str, log: StageLog) -> list[FileEntry]:
    """The run's trusted entries, read without quarantining anything (the run's own invocation
    quarantines a bad manifest); none when the manifest is missing or unreadable."""
    try:
        manifest = manifests.read(settings.ingest_bucket, run_id)
    except ClientError as e:
        if is_missing(e):
            return []
        raise
    except InvalidInput:
        return []
    return manifests.entries(manifest, run_id, {t.name for t in INGESTED_TABLES}, "csv")[0]


def _process_part(settings: Settings, run_id: str, entry: FileEntry, log: StageLog) -> None:
    """Process one ingested part into the processed part of the same number, then record it."""
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="totesys-process-") as folder:
        written, dates, hold = run.file_outcome(settings, run_id, entry, os.path.join(folder, "part"), log)
        held = [hold()] if hold is not None else []
        if written is None:  # the whole part is held back: its processed part has no rows
            output = transform.output_table(entry.table)
            written = run.write_parquet(settings, run_id, output, [], folder, log, entry.part)
    _record(settings.processed_bucket, run_id, part_name(entry.table, entry.part),
            {"table": entry.table, "part": entry.part, "output": written, "dates": _days(dates),
             "quarantined": held, "held": bool(held)})
    log.info("part processed", table=entry.table, part=entry.part, rows=written["rows"], seconds=timer.seconds)


def _finish_if_done(settings: Settings, run_id: str, entries: list[FileEntry], timer: Timer, log: StageLog
                    ) -> RunResult | None:
    """Write dim_date and the processed manifest if every unit of the run has its record."""
    bucket = settings.processed_bucket
    recorded = _recorded(bucket, run_id)
    parted = [e for e in entries if e.part is not None]
    missing = [e for e in parted if part_name(e.table, e.part) not in recorded]
    if FILES_RECORD not in recorded or missing:
        log.info("run waits for its parts", parts_missing=len(missing))
        return None
    files = _read_record(bucket, run_id, FILES_RECORD)
    outputs, quarantined, complete = dict(files["outputs"]), list(files["quarantined"]), set(files["complete"])
    days = list(files["dates"])
    for table in sorted({e.table for e in parted}):
        records = [_read_record(bucket, run_id, part_name(e.table, e.part)) for e in parted if e.table == table]
        output = transform.output_table(table).name
        for i, record in enumerate(records):
            if record["output"].get("key") != lake.part_key(output, run_id, "parquet", i):
                raise ProcessFailed(f"the record of part {i} of {table} in run {run_id} names another file")
        outputs[output] = manifests.parted_entry([r["output"] for r in records])
        for record in records:
            quarantined += record["quarantined"]
            days += record["dates"]
        if any(r["held"] for r in records):
            complete.discard(table)  # a row held back is not a row deleted
    dates = _dates(days)
    if len(dates):
        with tempfile.TemporaryDirectory(prefix="totesys-process-") as folder:
            outputs[DIM_DATE.name] = run.write_parquet(settings, run_id, DIM_DATE,
                                                       calendar.date_rows(dates).to_batches(), folder, log)
    return run.finish_run(settings, run_id, outputs, quarantined, complete, timer, log)


def _recorded(bucket: str, run_id: str) -> set[str]:
    """The names of the run's records present now (one listing)."""
    prefix = f"{STATE_PREFIX}{run_id}/"
    with lake_errors(bucket, prefix):
        keys = s3.list_keys(bucket, prefix)
    return {k[len(prefix):-len(".json")] for k in keys if k.endswith(".json")}


def _record(bucket: str, run_id: str, name: str, document: dict) -> None:
    key = record_key(run_id, name)
    with lake_errors(bucket, key):
        s3.put_json_create_only(bucket, key, document)  # False: a replay recorded it first, the same


def _read_record(bucket: str, run_id: str, name: str) -> dict:
    key = record_key(run_id, name)
    not_ours = f"the record {key} is not this stage's JSON"
    try:
        with lake_errors(bucket, key):
            body = s3.get_bytes(bucket, key, manifests.MAX_BYTES)  # a record is smaller than a manifest
    except s3.TooLarge:
        raise ProcessFailed(not_ours) from None
    record = parse_json(body, f"the record {key}", lambda _: ProcessFailed(not_ours))
    if not isinstance(record, dict):
        raise ProcessFailed(not_ours)
    return record


def _days(dates: pa.Array) -> list[int]:
    """Distinct dates as days since 1970-01-01 (JSON-friendly, and no pandas to convert them back)."""
    return dates.cast(pa.int32()).to_pylist()


def _dates(days: list[int]) -> pa.Array:
    values = array.array("i", days)
    return calendar.distinct_dates([pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])
                                    .cast(pa.date32())])
