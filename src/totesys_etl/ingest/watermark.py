"""The previous run's state, read back from the lake (its manifest is the ingest's only state).

Each ingest run records in its manifest what the next run needs to read exactly what is new
(readme_files/adr/0001-late-commits.md): the `pg_snapshot` it read under, its cut-off, the ids it
counted as still in progress (`in_progress`, savepoints' ids included) and their complement
between its xmin and xmax (`seen`), the id ranges whose old-stamped versions wait for the next
scan by transaction id (`unread`), when that scan last ran (`rescanned_at`), which database it
read (`source_identity`: system identifier, timeline, WAL position, start time) and the tables
it could not read (`stopped`). The newest run is found by listing `_runs/` only from a recent moment on (an
hour back, then further back only if that finds nothing readable), so the cost does not grow
with the lake.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Iterator
from datetime import date, datetime, timedelta, timezone

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.errors import InvalidInput, lake_errors
from totesys_etl.ingest import fx as fx_state
from totesys_etl.ingest import xid_state
from totesys_etl.ingest.identity import Identity
from totesys_etl.ingest.xids import NO_XIDS, XidSet, xid_ranges
from totesys_etl.logs import StageLog

#: How far before the previous cut-off (the source's clock, in UTC) a run that reads recent stamps
#: looks (contract §3: a time window may only add to the snapshot method, and is then at least 15
#: minutes). Stamps are whatever writers put there: a session in another zone stamps up to 12 hours
#: behind UTC (UTC-12), a clock stepped back or a daylight-saving fall-back moves them back again,
#: and a transaction that read for a while stamps before its first write. 14 hours covers every
#: zone with two hours to spare; anything older waits for a run that reads every stamp.
OVERLAP = timedelta(hours=14)

#: The first listing looks this far back; each further one eight times as far, back to FIRST_RUN.
RECENT = timedelta(hours=1)
FIRST_RUN = datetime(2000, 1, 1, tzinfo=timezone.utc)

_SNAPSHOT = re.compile(r"(\d{1,20}):(\d{1,20}):((?:\d{1,20}(?:,\d{1,20})*)?)")
_STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def parse_stamp(text) -> datetime:
    """A `last_updated`-like moment written by `format_cutoff` (no zone: the source's own)."""
    if not isinstance(text, str):
        raise ValueError("not a timestamp")
    return datetime.strptime(text, _STAMP_FORMAT)


@dataclass(frozen=True)
class Unread:
    """Versions no run has read yet: written by a transaction whose id is in `xids`, stamped at or
    before `stamped_up_to`. A run that read only recent stamps leaves these for the next scan by
    transaction id; every other run must leave them alone, so that scan reads each exactly once."""

    xids: str
    stamped_up_to: datetime

    def to_json(self) -> dict:
        return {"xids": self.xids, "stamped_up_to": format_cutoff(self.stamped_up_to)}

    @classmethod
    def from_json(cls, entry) -> "Unread":
        if not isinstance(entry, dict):
            raise ValueError("an unread entry is not an object")
        xids = entry.get("xids")
        return cls(str(xids) if isinstance(xids, XidSet) else xid_ranges(xids), parse_stamp(entry.get("stamped_up_to")))


@dataclass(frozen=True)
class Snapshot:
    """A `pg_snapshot`: transactions below `xmin` are finished, at or above `xmax` not yet started,
    and those in `xip` were in progress when it was taken. Ids are 64-bit (`xid8`)."""

    xmin: int
    xmax: int
    xip: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Snapshot":
        match = _SNAPSHOT.fullmatch(text) if isinstance(text, str) else None
        if not match:
            raise ValueError("not a pg_snapshot ('xmin:xmax:xip,...')")
        xmin, xmax = int(match.group(1)), int(match.group(2))
        xip = tuple(int(x) for x in match.group(3).split(",") if x)
        in_order = list(xip) == sorted(xip) and all(xmin <= x < xmax for x in xip)
        if not (0 < xmin <= xmax < 2 ** 63 and in_order):
            raise ValueError("pg_snapshot ids out of order")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        """The text form PostgreSQL reads back with `::pg_snapshot` (rebuilt from integers)."""
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in self.xip)}"


@dataclass(frozen=True)
class Watermark:
    """What a run read: its snapshot, its cut-off (the source's clock; UTC since issue 34), the ids
    it counted as in progress and their complement between its xmin and xmax (`seen`), what it
    left unread, its last full scan, which database it read, and the tables it could not read.

    A manifest from before `in_progress` existed gives it as the complement of its `seen` (what
    that run saw), which is what its runs meant. One from before `seen` existed gives no `seen`,
    no `unread` and no `rescanned_at`: the next run then scans whole tables (it may ship a version
    again, never lose one).
    """

    run_id: str
    snapshot: Snapshot
    cutoff: datetime
    seen: str | XidSet = NO_XIDS  # text, or the set itself when a state object gave it (xid_state.inline)
    unread: tuple[Unread, ...] = ()
    rescanned_at: str | None = None
    fx: str | None = None  # the newest FX day stored (ingest/fx.py); None before the first FX run
    fx_behind: tuple[tuple[str, str | None], ...] = ()  # FX currencies behind `fx`, each with its own day
    running: str | XidSet | None = None  # `in_progress` as recorded; None in manifests written before it
    identity: Identity | None = None
    stopped: tuple["Stopped", ...] = ()

    @cached_property
    def in_progress(self) -> XidSet:
        """Parsed once (with savepoints interleaved with commits it holds 100,000 ranges)."""
        if self.running is not None:
            return XidSet.parse(self.running)
        return XidSet.span(self.snapshot.xmin, self.snapshot.xmax) - self.seen_xids

    @cached_property
    def seen_xids(self) -> XidSet:
        return XidSet.parse(self.seen)

    def fields(self) -> dict:
        """The fields a stopped table carries to resume from (see `Stopped`)."""
        return {"run_id": self.run_id, "snapshot": str(self.snapshot), "cutoff": format_cutoff(self.cutoff),
                "seen": self.seen, "in_progress": self.in_progress, "unread": [u.to_json() for u in self.unread],
                "rescanned_at": self.rescanned_at}

    @classmethod
    def from_fields(cls, fields: dict, run_id) -> "Watermark":
        """The watermark in a manifest's fields; ValueError/TypeError if they do not hold one."""
        snapshot = Snapshot.parse(fields["snapshot"])
        cutoff = parse_stamp(fields["cutoff"])
        seen = _xids(fields.get("seen", NO_XIDS))
        running = fields.get("in_progress")
        if running is not None:
            running = _xids(running)
        unread = fields.get("unread", [])
        if not isinstance(unread, list):
            raise ValueError("unread is not a list")
        rescanned_at = fields.get("rescanned_at")
        if rescanned_at is not None and not (isinstance(rescanned_at, str) and lake.RUN_ID.fullmatch(rescanned_at)):
            raise ValueError("rescanned_at is not a run id")
        return cls(run_id, snapshot, cutoff, seen, tuple(Unread.from_json(u) for u in unread), rescanned_at,
                   running=running, identity=Identity.from_json(fields.get("source_identity")))

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Watermark":
        """The watermark of a parsed ingest manifest; InvalidInput if it does not hold one."""
        run_id = manifest.get("run_id")
        missing = [f for f in manifests.INGEST_FIELDS if f not in manifest]
        if missing:
            raise InvalidInput(f"manifest of {run_id!r} lacks {', '.join(missing)}")
        if manifest["stage"] != "ingest":
            raise InvalidInput(f"manifest of {run_id!r} is not an ingest manifest")
        try:
            watermark = cls.from_fields(manifest, run_id)
            fx = manifest.get("fx")
            if fx is not None and not (isinstance(fx, str) and date.fromisoformat(fx).isoformat() == fx):
                raise ValueError("fx is not a YYYY-MM-DD date")
            stopped = manifest.get("stopped", {})
            if not isinstance(stopped, dict):
                raise ValueError("stopped is not an object")
            fx_behind = tuple(fx_state.parse_behind(manifest.get(fx_state.BEHIND_FIELD)).items())
            return replace(watermark, fx=fx, fx_behind=fx_behind,
                           stopped=tuple(Stopped.from_json(t, e) for t, e in sorted(stopped.items())))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"manifest of {run_id!r}: {e}") from None


@dataclass(frozen=True)
class Stopped:
    """A table the source no longer gives every declared column of (contract §2 "Schema changes"):
    runs skip it until the columns are back, then read it from `since`, the watermark of the last
    run that read it (None: from the beginning), so it catches up with nothing lost."""

    table: str
    missing: tuple[str, ...]
    since: Watermark | None

    def to_json(self) -> dict:
        return {"missing": list(self.missing), "since": self.since.fields() if self.since else None}

    @classmethod
    def from_json(cls, table, entry) -> "Stopped":
        if not isinstance(table, str) or not isinstance(entry, dict) or not isinstance(entry.get("missing"), list):
            raise ValueError("a stopped entry is not {table: {missing, since}}")
        since = entry.get("since")
        if since is not None and not isinstance(since, dict):
            raise ValueError("a stopped entry's since is not an object")
        return cls(table, tuple(str(c) for c in entry["missing"]),
                   Watermark.from_fields(since, since.get("run_id")) if since else None)


def _xids(value) -> str | XidSet:
    """Id-set text, validated, or a set a state object gave back (xid_state.inline: decoded and checked
    there; turning 100,000 ranges into text and back would cost more than the rest of the run)."""
    return value if isinstance(value, XidSet) else xid_ranges(value)


def format_cutoff(moment: datetime) -> str:
    """The manifest's cut-off text: `YYYY-MM-DD HH:MM:SS.ffffff`, no zone (the source's own)."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def previous_watermark(bucket: str, log: StageLog, now: datetime | None = None, before: str | None = None
                       ) -> Watermark | None:
    """The newest run (before run id `before`, if given) whose `_runs/` manifest parses, or None.

    Manifests are listed from `now - RECENT` on (S3 lists in key order, and run ids sort in time
    order), newest first; if none there is readable, the window grows eightfold until it reaches
    FIRST_RUN. `now` is only a listing hint (a wrong clock costs listings, never correctness). A
    corrupt manifest is skipped with a warning: trusting it could move the cut-off past unread rows.
    A CDC run (`source_mode` `cdc`) newer than every readable polling run means the pipeline comes back
    from change data capture: None, so this run reads every row (a full read, which `reconcile` tells
    apart from a reship), since the changes since the last polling run were shipped from the slot.
    """
    for run_id in newest_runs_first(bucket, now):
        if before is not None and run_id >= before:
            continue
        watermark = _read_watermark(bucket, run_id, log)
        if watermark is _FROM_CDC:
            log.warning("the newest totesys run read the replication slot (cdc): this run reads every "
                        "row", previous_run_id=run_id)
            return None
        if watermark is not None:
            return watermark
    return None


#: How far a totesys run's id may lie ahead of the source's clock and still be a run (a clock stepped
#: back, contract §2); one further ahead is a stray or forged key, never the previous run.
MAX_CLOCK_STEP = timedelta(days=1)
_ONE_TICK = timedelta(microseconds=1)


def next_run_id(bucket: str, now: datetime, log: StageLog) -> str:
    """The id of a totesys run starting at `now` (the source's clock), in either mode: `now`, or one
    microsecond after the newest totesys run in the lake when that clock reads earlier (it stepped
    back), whichever mode wrote that run. The loader keeps the version of the latest run id (ADR
    0002), so run order never comes from a clock that can step, not even across a switch of mode
    or a recreated slot, whose full read must win over every run before it.

    Only runs dated at or after `now` matter, so one listing from there finds them (usually none).
    A courier run is passed over (its own source and clock; its events are stored once each,
    whatever the order of runs), as is a manifest that does not parse (nothing downstream loads it)
    and a key dated more than MAX_CLOCK_STEP after `now` (a stray or forged key must not drag every
    later run id forward)."""
    run_id, latest = lake.run_id_at(now), lake.run_id_at(now + MAX_CLOCK_STEP)
    with lake_errors(bucket, lake.RUNS_PREFIX):
        later = lake.runs_after(bucket, lake.run_id_at(now - _ONE_TICK))
    for newest in reversed(later):
        if newest > latest or not _is_totesys_run(bucket, newest):
            continue
        ahead = lake.run_time(newest) - now
        log.warning(f"the source's clock reads {ahead.total_seconds():.0f} s before the newest run's id: this "
                    "run's id follows it", previous_run_id=newest)
        return lake.run_id_at(lake.run_time(newest) + _ONE_TICK)
    return run_id


def _is_totesys_run(bucket: str, run_id: str) -> bool:
    """True for the manifest of a run either totesys mode wrote (not a courier file's, and parseable:
    not over manifest.MAX_BYTES, nor nested too deep to decode)."""
    try:
        manifest = manifests.read_if_present(bucket, run_id)
    except InvalidInput:
        return False
    return manifest is not None and not manifests.is_courier(manifest)


def newest_runs_first(bucket: str, now: datetime | None = None) -> Iterator[str]:
    """Run ids newest first, listed from `now - RECENT`, then eight times further back each time
    only if the caller asks for more, back to FIRST_RUN (the lake grows for years; a listing must
    not). `now` is only a listing hint: a wrong clock costs listings, never correctness."""
    now = now or datetime.now(timezone.utc)
    window, seen = RECENT, set()
    while True:
        start = now - window
        after = lake.run_id_at(start) if start > FIRST_RUN else None
        with lake_errors(bucket, lake.RUNS_PREFIX):
            runs = lake.runs_after(bucket, after)
        for run_id in reversed(runs):
            if run_id not in seen:
                seen.add(run_id)
                yield run_id
        if after is None:
            return
        if window == RECENT and not runs and _no_manifest_at_all(bucket):
            return  # a first run: one listing of one key instead of six ever wider ones
        window *= 8


def _no_manifest_at_all(bucket: str) -> bool:
    """True when nothing at all lies under `_runs/` (any object, even one that is not a manifest, says
    otherwise: then the windows go on growing, as they would have)."""
    with lake_errors(bucket, lake.RUNS_PREFIX):
        return next(s3.list_keys(bucket, lake.RUNS_PREFIX, limit=1), None) is None


#: What `_read_watermark` gives for a CDC run's manifest.
_FROM_CDC = object()


def _read_watermark(bucket: str, run_id: str, log: StageLog):
    try:
        parsed = manifests.read_if_present(bucket, run_id)
        if parsed is None:  # listed a moment ago: only a deletion behind our back gets here
            log.warning("skipping a manifest that disappeared", previous_run_id=run_id)
            return None
        if parsed.get("source_mode") == "cdc":
            return _FROM_CDC  # contract §10: no polling watermark; see previous_watermark
        if manifests.is_courier(parsed):
            return None  # a courier file's run (contract §9): it read nothing of the source
        manifests.require(parsed, run_id, manifests.INGEST_FIELDS)
        return Watermark.from_manifest(xid_state.inline(bucket, parsed))
    except InvalidInput as e:
        log.warning(f"skipping a corrupt manifest: {e}", previous_run_id=run_id)
        return None
