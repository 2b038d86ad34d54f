"""The previous run's state, read back from the lake (its manifest is the ingest's only state).

Each ingest run records in its manifest what the next run needs to read exactly what is new
(readme_files/adr/0001-late-commits.md): the `pg_snapshot` it read under, its cut-off, the
transaction ids it saw that its snapshot alone cannot tell apart (`seen`), the id ranges whose
old-stamped versions wait for the next scan by transaction id (`unread`), and when that scan last
ran (`rescanned_at`). The newest run is found by listing `_runs/` only from a recent moment on (an
hour back, then further back only if that finds nothing readable), so the cost does not grow
with the lake.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.errors import InvalidInput, lake_errors
from totesys_etl.ingest import fx as fx_state
from totesys_etl.logs import StageLog

#: Rows whose `last_updated` is at most this much older than the previous cut-off are re-checked
#: against the previous snapshot (contract §3: a time window may only add to the snapshot method, and
#: is then at least 15 minutes). It catches writes whose `last_updated` predates the transaction
#: id they committed under, e.g. a transaction that read for a while before its first write.
OVERLAP = timedelta(minutes=15)

#: The first listing looks this far back; each further one eight times as far, back to FIRST_RUN.
RECENT = timedelta(hours=1)
FIRST_RUN = datetime(2000, 1, 1, tzinfo=timezone.utc)

_SNAPSHOT = re.compile(r"(\d{1,20}):(\d{1,20}):((?:\d{1,20}(?:,\d{1,20})*)?)")
#: PostgreSQL's text form of a (canonical) `int8multirange`: `{}` or `{[a,b),[c,d)}`.
_XID_RANGES = re.compile(r"\{(?:\[\d{1,20},\d{1,20}\)(?:,\[\d{1,20},\d{1,20}\))*)?\}")
NO_XIDS = "{}"
_STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def xid_ranges(text) -> str:
    """Validated `int8multirange` text of transaction ids (it becomes a SQL literal only after this)."""
    if not isinstance(text, str) or not _XID_RANGES.fullmatch(text):
        raise ValueError("not a set of transaction id ranges ('{[a,b),...}')")
    return text


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
        return cls(xid_ranges(entry.get("xids")), parse_stamp(entry.get("stamped_up_to")))


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

    def widened_to(self, next_xid: int) -> "Snapshot":
        """The same visibility with ids in [xmax, next_xid) listed as in progress (see
        extract.take_snapshot): ids at or above xmax are invisible either way."""
        if next_xid <= self.xmax:
            return self
        return Snapshot(self.xmin, next_xid, tuple(sorted({*self.xip, *range(self.xmax, next_xid)})))

    def __str__(self) -> str:
        """The text form PostgreSQL reads back with `::pg_snapshot` (rebuilt from integers)."""
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in self.xip)}"


@dataclass(frozen=True)
class Watermark:
    """What a run read: its snapshot, its cut-off in the source's own zone (like last_updated), the
    ids it saw in its snapshot's in-between range, what it left unread, and its last full scan.

    A manifest from before these fields existed gives no `seen`, no `unread` and no
    `rescanned_at`: the next run then scans whole tables (it may ship a version again, never lose one).
    """

    run_id: str
    snapshot: Snapshot
    cutoff: datetime
    seen: str = NO_XIDS
    unread: tuple[Unread, ...] = ()
    rescanned_at: str | None = None
    fx: str | None = None  # the newest FX day stored (ingest/fx.py); None before the first FX run
    fx_behind: tuple[tuple[str, str | None], ...] = ()  # FX currencies behind `fx`, each with its own day

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
            snapshot = Snapshot.parse(manifest["snapshot"])
            cutoff = parse_stamp(manifest["cutoff"])
            seen = xid_ranges(manifest.get("seen", NO_XIDS))
            unread = manifest.get("unread", [])
            if not isinstance(unread, list):
                raise ValueError("unread is not a list")
            rescanned_at = manifest.get("rescanned_at")
            if rescanned_at is not None and not (isinstance(rescanned_at, str) and lake.RUN_ID.fullmatch(rescanned_at)):
                raise ValueError("rescanned_at is not a run id")
            fx = manifest.get("fx")
            if fx is not None and not (isinstance(fx, str) and date.fromisoformat(fx).isoformat() == fx):
                raise ValueError("fx is not a YYYY-MM-DD date")
            fx_behind = tuple(fx_state.parse_behind(manifest.get(fx_state.BEHIND_FIELD)).items())
            return cls(run_id, snapshot, cutoff, seen, tuple(Unread.from_json(u) for u in unread), rescanned_at, fx,
                       fx_behind)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"manifest of {run_id!r}: {e}") from None


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
    """
    now = now or datetime.now(timezone.utc)
    window, tried = RECENT, set()
    while True:
        start = now - window
        after = lake.run_id_at(start) if start > FIRST_RUN else None
        with lake_errors(bucket, lake.RUNS_PREFIX):
            runs = lake.runs_after(bucket, after)
        for run_id in reversed(runs):
            if run_id not in tried and (before is None or run_id < before):
                tried.add(run_id)
                watermark = _read_watermark(bucket, run_id, log)
                if watermark is not None:
                    return watermark
        if after is None:
            return None
        window *= 8


def _read_watermark(bucket: str, run_id: str, log: StageLog) -> Watermark | None:
    key = lake.manifest_key(run_id)
    with lake_errors(bucket, key, missing_ok=True) as call:
        body = s3.get_bytes(bucket, key)
    if call.missing:  # listed a moment ago: only a deletion behind our back gets here
        log.warning("skipping a manifest that disappeared", previous_run_id=run_id)
        return None
    try:
        if manifests.is_courier(manifests.parse(body, run_id)):
            return None  # a courier file's run (contract §9): it read nothing of the source
        return Watermark.from_manifest(manifests.parse(body, run_id, manifests.INGEST_FIELDS))
    except InvalidInput as e:
        log.warning(f"skipping a corrupt manifest: {e}", previous_run_id=run_id)
        return None
