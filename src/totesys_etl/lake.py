"""The lake's layout (contract §4): run ids, object keys, newest-first indexes, marks.

Every stage finds its work here, and nothing here knows a stage. Objects are create-only; what
changes over time (the newest run, a sweep's low-water mark) is a *new* object under a key that
sorts newest first, so reading it costs one short listing however long the lake has grown.
"""
from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

from totesys_etl.adapters import s3
from totesys_etl.config import seconds_setting

RUNS_PREFIX = "_runs/"
RUN_ID = re.compile(r"\d{8}T\d{12}Z")
#: A run's manifest appears at most this long after the moment its run id names (an ingest Lambda
#: runs 15 minutes at most; the rest is clock skew), so no manifest can still appear below a run id
#: older than this. A low-water mark never passes a younger one (see `settled`). Tests lower it
#: through SETTLE_VARIABLE so that marks move while they run.
SETTLE = timedelta(minutes=20)
SETTLE_VARIABLE = "TOTESYS_SETTLE_SECONDS"
_INVERT = str.maketrans("0123456789", "9876543210")


def run_id_at(moment: datetime) -> str:
    """The run id of a run that starts at `moment` (UTC): it sorts in time order."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def run_time(run_id: str) -> datetime:
    """The moment (UTC) a run id names: the inverse of `run_id_at`."""
    return datetime.strptime(run_id, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)


def run_date(run_id: str) -> tuple[str, str, str]:
    return run_id[0:4], run_id[4:6], run_id[6:8]


def table_key(table: str, run_id: str, extension: str) -> str:
    """`<table>/year=YYYY/month=MM/day=DD/<table>_<run_id>.<extension>`, dated by the run."""
    year, month, day = run_date(run_id)
    return f"{table}/year={year}/month={month}/day={day}/{table}_{run_id}.{extension}"


#: How many parts one table of one run may have: `part_key`'s five digits (contract §4 "Parts").
MAX_PARTS = 100_000


def part_key(table: str, run_id: str, extension: str, part: int) -> str:
    """`<table>/…/<table>_<run_id>.part<NNNNN>.<extension>`: part `part` of a table split into parts."""
    if not 0 <= part < MAX_PARTS:
        raise ValueError(f"part {part} is outside 0..{MAX_PARTS - 1}")
    return table_key(table, run_id, f"part{part:05d}.{extension}")


def manifest_key(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}.json"


def run_id_of_manifest(key: str) -> str | None:
    """The run id if `key` is exactly a run manifest's key (`_runs/<run_id>.json`), else None."""
    if key.startswith(RUNS_PREFIX) and key.endswith(".json"):
        candidate = key[len(RUNS_PREFIX):-len(".json")]
        if RUN_ID.fullmatch(candidate):
            return candidate
    return None


def newest_first(run_id: str) -> str:
    """A sort key that lists the newest run first (digits complemented: 9 - d)."""
    return run_id.translate(_INVERT)


def manifest_exists(bucket: str, run_id: str) -> bool:
    return s3.exists(bucket, manifest_key(run_id))


def runs_after(bucket: str, after: str | None, limit: int | None = None) -> list[str]:
    """Run ids of the manifests in `bucket` after run `after`, in order (contract §4 StartAfter)."""
    start = manifest_key(after) if after else None
    return [r for r in (run_id_of_manifest(k) for k in s3.list_keys(bucket, RUNS_PREFIX, start, limit)) if r]


def write_mark(bucket: str, prefix: str, run_id: str) -> None:
    """Record a low-water mark: every run up to `run_id` is handled. Marks only ever accumulate."""
    s3.put_create_only(bucket, f"{prefix}{newest_first(run_id)}", run_id.encode(), "text/plain")


def read_mark(bucket: str, prefix: str) -> str | None:
    """The highest low-water mark recorded under `prefix`, or None before the first one."""
    for key in s3.list_keys(bucket, prefix):
        candidate = key[len(prefix):].translate(_INVERT)
        if RUN_ID.fullmatch(candidate):  # a stray key is skipped, never a reason to list everything
            return candidate
    return None


def advance_mark(candidates: list[str], done: set[str]) -> str | None:
    """The last run of `candidates` (sorted) below which every run is done; None if the first is not."""
    mark = None
    for run_id in candidates:
        if run_id not in done:
            break
        mark = run_id
    return mark


def settle_period(env=None) -> timedelta:
    """How old a run id must be before a mark may pass it: `TOTESYS_SETTLE_SECONDS`, else SETTLE."""
    env = os.environ if env is None else env
    return timedelta(seconds=seconds_setting(env, SETTLE_VARIABLE, SETTLE.total_seconds()))


def settled(run_ids: list[str], now: datetime | None = None) -> list[str]:
    """The run ids at least `settle_period()` old: what a sweep may move its low-water mark over.

    A mark moved past a younger run id could pass a run still being ingested (a slow or
    concurrent ingest writes its manifest last) or a corrupt manifest named in the future, and the
    sweep, listing only after the mark, would never see the runs below it. Keeping the mark
    SETTLE behind costs a sweep a listing of a few more recent manifests, never a missed run.
    """
    ceiling = run_id_at((now or datetime.now(timezone.utc)) - settle_period())
    return [r for r in run_ids if r <= ceiling]
