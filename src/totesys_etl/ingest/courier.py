"""Courier files (contract §9): each object landed in TOTESYS_LANDING_BUCKET becomes one ingest run.

An object (its key and ETag) is *taken* by one run: a run id from the clock, its valid events as the
`delivery_event` CSV under contract §4's layout, bad events held back alone and a file that is not
JSON at all copied aside whole (both in the processed bucket's quarantine, as the processor's are),
then the run's manifest (`manifest.courier_manifest`) last. The processor and loader then treat the
run like any other. Only after the manifest is a create-only marker written,
`_state/landing/<sha256 of bucket, key, ETag>.json` in the ingested bucket, naming the run: an
object with a marker is never taken again. The landing bucket is only ever read.

Before anything else a take writes, create-only, the record of the object's first take,
`_state/landing_take/<the same sha256>.json`, naming its run id; a later take of the same object
(a retry, or a second pick-up at once) reads it back. What is quarantined goes under that first
run id, `quarantine/<first run_id>/…`, and is not written (nor alarmed) again once its reason file
is there, so `totesys-etl quarantine` and `status` count a file's bad events once however many
takes there were (`first_take` says why only the quarantine reuses the id). A later take whose
first take has its manifest (a crash between manifest and marker) writes the marker and nothing else.

Why this is safe without any lock (contract §3: a conditional write is never a claim):
- a crash before the manifest leaves no run (its CSV is named by nothing); the retry quarantines
  nothing twice (above). One after the manifest and before the marker is finished by the retry's
  marker. Two pick-ups at once (the ObjectCreated event and the sweep) may make two runs of the same
  object: the loader stores an `event_id` only if it is absent (load/deliveries.py), so every event
  is loaded once whatever number of runs carry it;
- S3 shows an object only once its upload is complete (PUT and multipart alike), so a file "still
  being written" is not listed and cannot be read half-written; the exact version listed or named
  by the event is read (`IfMatch` on its ETag): an object removed or replaced before it is read is
  skipped with a warning (a replacement has an ETag, and an event, of its own).

The sweep (the scheduled ingest) lists the landing bucket and takes every object it holds whose
`LastModified` is at or after the sweep's low-water mark and that has no marker; the mark, in the
ingested bucket under `_state/landing_mark/`, trails the clock by LANDING_SETTLE (S3's
`LastModified` of a multipart upload is when the upload began, which may be long before the object
appears) and never passes an object that failed. So a sweep reads markers only for recent
objects; the listing itself is one request per 1,000 objects (a lifecycle rule on the landing
bucket, tf/landing.tf, keeps it bounded).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Callable

from botocore.exceptions import BotoCoreError, ClientError

from totesys_etl import failures, lake, quarantine
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.errors import (EtlError, InvalidInput, LakeUnavailable, RunIdCollision, describe, is_missing, kind_of,
                                lake_errors, parse_json)
from totesys_etl.events import Invocation
from totesys_etl.faults import crash_point
from totesys_etl.ingest.courier_files import MAX_HELD_CHARS, Unreadable, items
from totesys_etl.landing_marks import MARK_PREFIX, Landed, is_taken, landed_digest, marker_key
from totesys_etl.logs import StageLog, Timer
from totesys_etl.runs import RunResult
from totesys_etl.schema.courier import DELIVERY_EVENT, event_row, validate_event

#: How far the sweep's mark trails the clock (see the module's docstring).
LANDING_SETTLE = timedelta(days=1)
#: CSV of the held-back events: the record number, the event as JSON text, the reason.
HELD_COLUMNS = ("etl_row", "event", "etl_reason")
#: The ingested bucket's records of each landed object's first take (`first_take`).
FIRST_TAKE_PREFIX = "_state/landing_take/"
#: A first-take record is a few hundred bytes (a landing key is at most 1,024): more is not ours.
MAX_FIRST_TAKE_BYTES = 64 << 10


class CourierFailed(EtlError):
    """One or more landed files could not be taken (each was logged with its own error_kind)."""

    error_kind = "pipeline_failed"
    runs_failed = "could not be taken"


#: S3 keys are at most 1,024 bytes: a landing key longer than this is quarantined under a hash of it.
MAX_QUARANTINE_NAME_BYTES = 900


def quarantine_name(key: str) -> str:
    """The name a landed file's quarantined copy or rows go under: its key, or a hash of a long one
    (`quarantine/<run_id>/` and the suffixes must still fit S3's limit); the run's manifest names the key."""
    if len(key.encode()) <= MAX_QUARANTINE_NAME_BYTES:
        return key
    return f"long-landing-key/{hashlib.sha256(key.encode()).hexdigest()}"


class _HeldEvents:
    """The bad events of one file, written to a local CSV as they come (what `quarantine.hold_rows` takes)."""

    def __init__(self, path: str):
        self.path, self.count, self.reasons = path, 0, Counter()
        # A bad event may hold a lone surrogate ("\ud800" in JSON), which UTF-8 cannot carry: kept escaped.
        self._file = open(path, "w", newline="", encoding="utf-8", errors="backslashreplace")
        self._writer = csv.writer(self._file, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        self._writer.writerow(HELD_COLUMNS)

    def add(self, number: int, text: str, reason: str) -> None:
        self._writer.writerow((number, text[:MAX_HELD_CHARS], reason))
        self.count += 1
        self.reasons.update(reason.split("; "))

    def close(self) -> None:
        self._file.close()


def _as_text(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # nothing json.loads gave back fails here; kept safe anyway
        return repr(value)


def _read(body, csv_path: str, held: _HeldEvents) -> int:
    """Stream the object's events into the run's CSV (valid ones) and `held` (bad ones); the valid count.

    Raises Unreadable for a file that is not JSON at all.
    """
    rows = 0
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        # Strings quoted, numbers not: '' stays '' (contract §4's unambiguous NULL is an unquoted
        # empty field, which no valid event has).
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        writer.writerow(DELIVERY_EVENT.column_names)
        for item in items(body):
            if item.error is not None:
                held.add(item.number, item.text, item.error)
                continue
            row = event_row(item.value)
            if row is None:
                held.add(item.number, _as_text(item.value), validate_event(item.value)[1] or "not a valid event")
                continue
            try:
                writer.writerow(row)  # one write of the whole line: a failed encoding writes nothing
            except UnicodeEncodeError:
                held.add(item.number, _as_text(item.value), "text holds a lone surrogate, which is not Unicode text")
                continue
            rows += 1
    return rows


def first_take_key(bucket: str, key: str, etag: str) -> str:
    """Where the record of a landed object's first take lives (ingested bucket; see `first_take`)."""
    return f"{FIRST_TAKE_PREFIX}{landed_digest(bucket, key, etag)}.json"


def first_take(bucket: str, landed: dict, run_id: str, log: StageLog) -> str:
    """The run id of the landed object's first take: `run_id` if this take is the first, else the one
    an earlier take (crashed, failed or still running) recorded. Its bad events go under that run's
    quarantine, whichever take writes them, so `totesys-etl quarantine` lists them once.

    Why a record, and why only the quarantine reuses its run id (contract §3, §4): the record is one
    create-only object per landed version (`_state/landing_take/<hash>.json`, the ingest's own
    state), written before anything is quarantined, so every take of the object agrees on one
    quarantine prefix however many retries or pick-ups at once there are. The take's CSV and
    manifest keep a run id from the clock: an older run id whose manifest appeared only now could
    lie below the processor's low-water mark, which passes run ids older than the settle period,
    and never be swept. Deduplicating in the listing instead would keep every copy in the bucket
    and make each reader of the quarantine repeat the rule.
    """
    key = first_take_key(landed["bucket"], landed["key"], landed["etag"])
    with lake_errors(bucket, key):
        if lake.manifest_exists(bucket, run_id):  # a run id another take holds must not become this file's
            raise RunIdCollision(f"another ingest holds run {run_id}: this file is taken later")
        if s3.put_json_create_only(bucket, key, {"run_id": run_id, **landed}):
            return run_id
    try:
        with lake_errors(bucket, key):
            body = s3.get_bytes(bucket, key, MAX_FIRST_TAKE_BYTES)
        recorded = parse_json(body, key, ValueError).get("run_id")
    except (s3.TooLarge, ValueError, AttributeError):  # not what a take writes: ours is a small JSON object
        recorded = None
    if isinstance(recorded, str) and lake.RUN_ID.fullmatch(recorded):
        return recorded
    log.warning("the record of this file's first take is unreadable: its quarantine goes under this run",
                key=landed["key"], record=key)
    return run_id


def _already_ingested(bucket: str, run_id: str, landed: dict) -> bool:
    """Whether run `run_id` is a take of this very object whose manifest exists: a take that stopped
    after its manifest and before its marker (a run id that another run holds does not count)."""
    try:
        manifest = manifests.read_if_present(bucket, run_id)
    except InvalidInput:
        return False
    return manifest is not None and manifests.is_courier(manifest) and manifest.get("landing") == landed


def _mark_taken(bucket: str, landed: dict, run_id: str) -> None:
    """The create-only marker naming the run that took the object: it is never taken again."""
    marker = marker_key(landed["bucket"], landed["key"], landed["etag"])
    with lake_errors(bucket, marker):
        s3.put_json_create_only(bucket, marker, {"run_id": run_id, **landed})


def _quarantine_once(bucket: str, target: str, quarantine_now: Callable[[], dict], entry: dict,
                     log: StageLog) -> dict:
    """The manifest entry of what is quarantined at `target`, quarantining it (and logging its ERROR)
    only if no earlier take of the file did: the reason file, written last, says it is all there.
    `entry` is what this take would list; an earlier take of the same object (same ETag) found the
    same, so its reason file is only looked for, never read (its content is not trusted input)."""
    reason_key = f"{target}{quarantine.REASON_SUFFIX}"
    with lake_errors(bucket, reason_key):
        done = s3.exists(bucket, reason_key)
    if not done:
        entry = quarantine_now()
    else:
        log.info("already quarantined by an earlier take of this file: not again", quarantine_key=target)
    return {"table": DELIVERY_EVENT.name, **entry, "quarantine_key": target}


def _hold_back(settings: Settings, quarantine_run: str, key: str, unreadable: str | None, held: _HeldEvents,
               log: StageLog) -> list[dict]:
    """Quarantine what the file holds back under its first take's run (`first_take`): the whole file
    when it could not be read (`unreadable`, the reason), else its bad events; the manifest's entries."""
    bucket, name = settings.processed_bucket, quarantine_name(key)
    if unreadable is not None:
        def copy_whole() -> dict:
            return quarantine.quarantine_file(settings.landing_bucket, key, bucket, quarantine_run, unreadable,
                                              quarantine.QUARANTINED_FILE, log, name=name)
        return [_quarantine_once(bucket, quarantine.quarantine_key(quarantine_run, name), copy_whole,
                                 quarantine.file_entry(key, unreadable, quarantine.QUARANTINED_FILE), log)]
    if held.count:
        def hold_events() -> dict:
            return quarantine.hold_rows(bucket, quarantine_run, DELIVERY_EVENT.name, name, held, log)
        return [_quarantine_once(bucket, quarantine.rows_key(quarantine_run, name), hold_events,
                                 quarantine.rows_entry(quarantine_run, DELIVERY_EVENT.name, name, held), log)]
    return []


def take(settings: Settings, obj: Landed, log: StageLog) -> RunResult | None:
    """Take one landed object as one ingest run; None if it is taken already or gone.

    Raises on a transient failure (S3, the disk): nothing is marked, so a later pick-up retries, and
    finds what this take quarantined already there (`first_take`).
    """
    landing, bucket = settings.landing_bucket, settings.ingest_bucket
    if is_taken(settings, obj):
        log.debug("landed file already taken", key=obj.key, etag=obj.etag)
        return None
    timer = Timer()
    run_id = lake.run_id_at(datetime.now(timezone.utc))
    log = log.bind(run_id=run_id)
    landed = {"bucket": landing, "key": obj.key, "etag": obj.etag}
    quarantine_run = first_take(bucket, landed, run_id, log)
    if quarantine_run != run_id and _already_ingested(bucket, quarantine_run, landed):
        _mark_taken(bucket, landed, quarantine_run)
        log.info("landed file was ingested by an earlier take that stopped before marking it: marked now",
                 key=obj.key, taken_by=quarantine_run)
        return None
    files, rows = {}, {DELIVERY_EVENT.name: 0}
    with tempfile.TemporaryDirectory(prefix="totesys-courier-") as folder:
        csv_path, held = os.path.join(folder, "events.csv"), _HeldEvents(os.path.join(folder, "held.csv"))
        try:
            try:
                body = s3.open_stream(landing, obj.key, obj.etag)
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code"))
                if is_missing(e) or code in ("PreconditionFailed", "412"):
                    log.warning("landed file removed or replaced before it was read: skipped (a replacement is "
                                "taken on its own)", key=obj.key, etag=obj.etag)
                    return None
                raise
            unreadable = None
            try:
                rows[DELIVERY_EVENT.name] = _read(body, csv_path, held)
            except Unreadable as e:
                unreadable = f"courier file: {e}"
            finally:
                body.close()
            held.close()
            if rows[DELIVERY_EVENT.name]:
                key = lake.table_key(DELIVERY_EVENT.name, run_id, "csv")
                with lake_errors(bucket, key):
                    if not s3.upload_file_create_only(bucket, key, csv_path) \
                            and not s3.holds(bucket, key, path=csv_path):
                        raise RunIdCollision(f"another run wrote {key}: stopped without a manifest")
                files[DELIVERY_EVENT.name] = {"key": key, "rows": rows[DELIVERY_EVENT.name],
                                              "columns": DELIVERY_EVENT.column_names}
            quarantined = _hold_back(settings, quarantine_run, obj.key, unreadable, held, log)
        finally:
            held.close()
    manifest = manifests.courier_manifest(run_id, landed, files, rows, quarantined)
    if files:
        crash_point("ingest.before_manifest")
    key = lake.manifest_key(run_id)
    with lake_errors(bucket, key):
        if not manifests.write(bucket, manifest) and not s3.holds(bucket, key, body=s3.json_body(manifest)):
            raise RunIdCollision(f"another ingest wrote the manifest of run {run_id}: this file is taken later")
    crash_point("ingest.after_manifest")
    _mark_taken(bucket, landed, run_id)
    result = RunResult(run_id, {t: n for t, n in rows.items() if n}, timer.seconds, files=len(files),
                       quarantined=sum(e.get("rows", 1) for e in quarantined))
    log.info("courier file ingested", key=obj.key, events=rows[DELIVERY_EVENT.name], held_back=held.count,
             quarantined_whole=unreadable is not None, seconds=result.seconds,
             **({"quarantined_under": quarantine_run} if quarantined and quarantine_run != run_id else {}))
    return result


def _take_each(settings: Settings, objects: list[Landed], log: StageLog) -> tuple[list[RunResult], list[Landed]]:
    """Take each object in turn; one that fails is logged with its error_kind and the others go on."""
    results, failed = [], []
    for obj in objects:
        try:
            result = take(settings, obj, log)
        except (ClientError, BotoCoreError) as e:
            failed.append(obj)
            log.error(f"taking {obj.key} failed: {describe(e)}", LakeUnavailable.error_kind, key=obj.key)
            continue
        except Exception as e:  # each file on its own: logged with its kind, the rest go on, fail at the end
            failed.append(obj)
            log.error(f"taking {obj.key} failed: {describe(e)}", kind_of(e), key=obj.key)
            continue
        if result is not None:
            results.append(result)
    return results, failed


def _raise_if_failed(failed: list[Landed], results: list[RunResult]) -> None:
    """One error for the files that failed (each already logged); it carries the runs that were written."""
    if failed:
        error = CourierFailed(f"{len(failed)} landed file(s) could not be taken, e.g. {failed[0].key!r}; "
                              "a later invocation retries them")
        error.logged, error.results = True, results
        raise error


def take_event_objects(settings: Settings, invocation: Invocation, log: StageLog) -> list[RunResult]:
    """Take the landing bucket's objects an S3 event names (each at its current ETag)."""
    results, failed = [], []
    for obj in invocation.objects:
        if obj.bucket != settings.landing_bucket:
            log.info("ignored an object outside the landing bucket", bucket=obj.bucket, key=obj.key)
            continue
        with lake_errors(obj.bucket, obj.key):
            found = s3.head(obj.bucket, obj.key)
        if found is None:
            log.warning("landed file removed before it was read: skipped", key=obj.key)
            continue
        taken, bad = _take_each(settings, [Landed(obj.key, found["etag"], found["last_modified"])], log)
        results += taken
        failed += bad
    _raise_if_failed(failed, results)
    return results


def sweep(settings: Settings, log: StageLog, now: datetime | None = None) -> list[RunResult]:
    """Take every landed object at or after the low-water mark that is not taken yet, then move the mark."""
    now = now or datetime.now(timezone.utc)
    landing, bucket = settings.landing_bucket, settings.ingest_bucket
    with lake_errors(bucket, MARK_PREFIX):
        mark = lake.read_mark(bucket, MARK_PREFIX)
    with lake_errors(landing):
        recent = [Landed(o["key"], o["etag"], o["last_modified"]) for o in s3.list_objects(landing)
                  if mark is None or lake.run_id_at(o["last_modified"]) >= mark]
    results, failed = _take_each(settings, recent, log)
    floor = min([now - LANDING_SETTLE, *(f.last_modified for f in failed)])
    new_mark = lake.run_id_at(floor)
    if mark is None or new_mark > mark:
        with lake_errors(bucket, MARK_PREFIX):
            lake.write_mark(bucket, MARK_PREFIX, new_mark)
    _raise_if_failed(failed, results)
    return results


def sweep_logged(settings: Settings, log: StageLog) -> list[RunResult]:
    """`sweep`, for the scheduled ingest: a failure is logged (once) and recorded for `status`, and
    the runs taken before it are returned, so the totesys run's outcome stays the handler's own."""
    try:
        return sweep(settings, log)
    except Exception as e:  # logged with its kind; the next sweep retries what failed
        if not getattr(e, "logged", False):
            log.error(f"courier sweep failed: {describe(e)}", kind_of(e))
        failures.record("ingest", e)
        return list(getattr(e, "results", []))
