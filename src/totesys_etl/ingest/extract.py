"""What changed since the previous run, as SQL, and COPY of it to a local CSV file.

A row version is identified by its writer's transaction id `x` (the row's `xmin`, made 64-bit) and
its stamp `s` (`last_updated`). The previous run P left in its manifest (watermark.py) its
snapshot, the ids it counted as in progress (`in_progress`, savepoints' ids included, asked of
`pg_xact_status` just before its snapshot) and their complement between its xmin and xmax
(`P.seen`), and `P.unread` (id ranges whose old-stamped versions no run has read yet). A version
is *unseen by P* iff `x >= P.xmin AND x NOT IN P.seen`: it was in progress at P or came after.
A run never reads a version of an id it counts as in progress itself: the next run does.
A first run (no previous manifest) reads as **first**: every version of an id it does not count
as in progress, leaving nothing unread. Every later run reads, per table, in one of three ways
(readme_files/adr/0001-late-commits.md):

- **recent** (nothing P had in progress has ended): unseen versions stamped after `P.cutoff -
  OVERLAP` (14 hours: writers' zones, clock steps), an index range when the source indexes
  `last_updated`. Versions of ids that first became visible to this run but are stamped earlier
  are left `unread`: they wait for a run that reads every stamp.
- **full** (something P had in progress has ended: it may have written old stamps): every unseen
  version whatever its stamp (a sequential scan). What it read is no longer `unread`.
- **rescan** (`full_rescan_seconds` since the last scan; MAX_UNREAD claims unread; a stopped table
  resuming): as full, plus every `unread` version. Nothing is left unread afterwards.

So a run ships what changed since the previous run however long a transaction stays open, and
never ships a version a run already shipped. Which versions a plan reads is stated once
(`Plan.condition`, a `ReadCondition`): the ingest renders it as SQL, `reconcile` (wraparound.py) asks
it about one version. COPY takes no bind parameters, so the few values in
these statements are built from integers, validated id-range text and datetimes parsed out of
the previous manifest (never copied from its text unchecked), quoted with pg8000's `literal()`;
identifiers come from the schema declaration, quoted with `identifier()`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import BinaryIO, Callable
from datetime import datetime

from pg8000.native import identifier, literal

from totesys_etl import lake
from totesys_etl.adapters.postgres import Connection, copy_out, rollback_quietly, transaction
from totesys_etl.ingest.identity import Identity, read_identity
from totesys_etl.ingest.watermark import OVERLAP, Snapshot, Unread, Watermark, format_cutoff
from totesys_etl.ingest.xids import XID_SPAN, XidSet
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table

#: Above every transaction id (an exclusive bound that still fits a bigint).
_NO_ID = (1 << 63) - 1
#: The source-wide advisory lock key (any 64-bit constant) under which a run takes its snapshot and
#: names itself, so that run ids sort in snapshot order even when two ingests start together.
SNAPSHOT_LOCK_KEY = 0x746F7465_73797331  # "totesys1"
#: Past this many unread claims a run scans by transaction id at once, so statements stay short.
MAX_UNREAD = 200


@dataclass(frozen=True)
class Cut:
    """This run's consistent view: its snapshot, the ids it counts as in progress (savepoints'
    ids included), its cut-off (the source's clock in UTC, the time the stamp window is measured
    from), the source's clock just after the lock was taken, which names the run, and which
    database it is (identity.py)."""

    snapshot: Snapshot
    in_progress: XidSet
    cutoff: datetime
    now: datetime
    identity: Identity | None = None

    @cached_property
    def seen(self) -> XidSet:
        """The ids strictly between xmin and xmax that had ended: every version they wrote is
        visible to this snapshot (or never will be). The next run's unseen zone is the rest."""
        return XidSet.span(self.snapshot.xmin + 1, self.snapshot.xmax) - self.in_progress


@dataclass(frozen=True)
class Plan:
    """How this run reads every table: `mode` is `first`, `recent`, `full` or `rescan`."""

    previous: Watermark | None
    current: Snapshot
    mode: str
    in_progress: XidSet = XidSet()

    @property
    def reads_every_stamp(self) -> bool:
        return self.mode != "recent"

    @cached_property
    def reads(self) -> XidSet:
        """The ids whose versions this run reads (a recent run only those stamped in its window): unseen
        by the previous run (at or above its xmin, not in its `seen`) and not in progress now.

        One exact set, computed once: while a transaction whose savepoints interleaved with other
        commits stays open, both `seen` and the ids in progress hold 100,000 ranges, but this is
        `[previous xmax, ...)` and what ended; a statement carries the fragments only in the run
        that meets them (the first after the interleaving, the first after the commit)."""
        return XidSet.span(self.previous.snapshot.xmin, _NO_ID) - self.previous.seen_xids - self.in_progress

    @cached_property
    def condition(self) -> ReadCondition:
        """Which versions this run reads of a table read by this plan: the one place the rule is built,
        for the ingest's statement (`changes_query`) and for `reconcile`'s proof of a re-read
        (wraparound.py), which rebuilds the plan from the manifests. Built once per plan: every table
        read by it carries the same sets."""
        previous = self.previous
        if previous is None:
            return ReadCondition(self.current.xmax, self.in_progress)
        after = None if self.reads_every_stamp else previous.cutoff - OVERLAP
        claims = tuple((XidSet.parse(u.xids) - self.in_progress, u.stamped_up_to) for u in previous.unread
                       ) if self.mode == "rescan" else ()
        return ReadCondition(self.current.xmax, self.in_progress, self.reads, after, claims)


@dataclass(frozen=True)
class ReadCondition:
    """Which versions of a table a run reads, by writer id `x` (64-bit) and stamp (`last_updated`), stated
    once: `sql` renders it for the ingest's statement, `has` answers it for one version (wraparound.py).
    The pipeline builds it only through `Plan.condition`, and both answers come from these fields, so
    the two cannot drift (test/ingest/test_extract.py checks them against each other row for row).

    A version is read iff its id is in `reads` (stamped after `after`, if given: a recent read) or in
    one of the `claims` stamped at or before its bound (a rescan's unread claims, less the ids in
    progress). `reads` None is a first read: every id not in progress. `xmax` is the run's snapshot's:
    a raw `xmin` is made 64-bit against it (`xid8_of_xmin`, `xids.xid8_of_raw`)."""

    xmax: int
    in_progress: XidSet
    reads: XidSet | None = None
    after: datetime | None = None
    claims: tuple[tuple[XidSet, datetime], ...] = ()

    def has(self, x: int, stamp: datetime) -> bool:
        """Whether the version with 64-bit writer id `x` and `last_updated` `stamp` is read."""
        if self.reads is None:
            return x not in self.in_progress
        if x in self.reads and (self.after is None or stamp > self.after):
            return True
        return any(x in xids and stamp <= up_to for xids, up_to in self.claims)

    def sql(self, x: str) -> str | None:
        """The condition as SQL over the id expression `x` and the `last_updated` column; None when every
        version is read (a first read with nothing in progress). Values are literal()s of parsed numbers
        and times; `x` is the caller's own SQL, never input."""
        if self.reads is None:
            return f"NOT ({in_xids(x, self.in_progress)})" if self.in_progress else None
        last_updated = identifier("last_updated")
        read = f"({in_xids(x, self.reads)})"
        if self.after is not None:
            read = f"{last_updated} > {_stamp(self.after)} AND {read}"  # AND binds before OR, as in `has`
        claims = [f"(({in_xids(x, xids)}) AND {last_updated} <= {_stamp(up_to)})" for xids, up_to in self.claims]
        return " OR ".join([read, *claims])


#: The next unassigned id (epoch-aware, through `age(xid)`, open to any role) and the oldest running one.
_NEXT_AND_XMIN = (
    "SELECT ref + age((ref % 4294967296)::text::xid), xmin FROM ("
    " SELECT CASE WHEN xmax % 4294967296 < 3 THEN xmax - 3 ELSE xmax END AS ref, xmin FROM ("
    "  SELECT pg_snapshot_xmax(s)::text::bigint AS xmax, pg_snapshot_xmin(s)::text::bigint AS xmin"
    "  FROM pg_current_snapshot() AS s) AS a) AS b")


def _ids_of(prefix: str) -> str:
    """SQL: the ids of one group asked about, as `xid8`: single ids as an `xid8[]` (no cast per id), long
    ranges as two `bigint[]` of bounds (cheaper than their ids)."""
    return (f"SELECT x FROM unnest(CAST(:{prefix}_ids AS xid8[])) AS x UNION ALL"  # nosec B608 - our prefixes
            f" SELECT x::text::xid8 FROM unnest(CAST(:{prefix}_los AS bigint[]), CAST(:{prefix}_his AS bigint[]))"
            " AS r(lo, hi), generate_series(lo, hi - 1) AS x")


#: Of the ids the previous run counted as in progress, those that ended (usually none: a transaction
#: with 100,000 savepoints open stays open); of the ids handed out since, those still running (usually
#: few). Either answer is short in the usual case, and comes back as ids.
_STATUS = (
    "SELECT (SELECT coalesce(array_agg(x), '{}')::text FROM (" + _ids_of("before") + ") AS b"  # nosec B608
    "  WHERE pg_xact_status(x) IS DISTINCT FROM 'in progress'),"  # NULL: too old to be known, so ended
    " (SELECT coalesce(array_agg(x), '{}')::text FROM (" + _ids_of("since") + ") AS s"
    "  WHERE pg_xact_status(x) = 'in progress')")
#: A range of the ids asked about up to this long goes as its ids, a longer one as its bounds.
_SHORT_RANGE = 8


def in_progress_before(conn: Connection, previous: Watermark | None) -> tuple[XidSet, int]:
    """The ids still in progress just before the snapshot is taken, and the next unassigned id then.

    Asked with `pg_xact_status`, which knows savepoints' ids and, on a hot standby, the primary's
    running transactions (where `pg_current_snapshot()` lists none). Only ids that could still run
    are asked: those the previous run counted as in progress and those handed out since it (on a
    first run, everything from the oldest running id on), and of those only the ones at or above
    the oldest id running now (below it every id has ended: nothing to ask). So the cost follows
    what happened since the previous run and what still runs, not how long a transaction has held
    an id. An id that ends between this question and the snapshot stays "in progress" for this run:
    it skips that id's versions and the next run reads them, so nothing is read twice and nothing
    is lost.

    Two statements in one transaction: the first finds the next id and the oldest running one, the
    second asks about the rest and answers with ids, not `int8multirange` text (PostgreSQL parses
    and prints 100,000 ranges, savepoints interleaved with commits, far slower than as many
    integers): of the previous run's, those that ended; of the new ones, those still running.
    """
    candidates = previous.in_progress if previous is not None else XidSet()
    since = previous.snapshot.xmax if previous is not None else 0
    with transaction(conn, read_only=True):  # every statement in a transaction: see begin_snapshot
        next_xid, xmin = (int(v) for v in conn.run(_NEXT_AND_XMIN)[0])
        now = XidSet.span(xmin, next_xid)
        before = _without_special_ids(candidates & now)
        new = _without_special_ids(XidSet.span(min(since, next_xid), next_xid) & now) - before
        ended, running = conn.run(_STATUS, **_asked("before", before), **_asked("since", new))[0]
    return (before - _of_ids_text(ended)) | _of_ids_text(running), next_xid


def _asked(prefix: str, xids: XidSet) -> dict[str, str]:
    """The parameters `_ids_of(prefix)` takes for `xids`."""
    short, long = xids.split(_SHORT_RANGE)
    return {f"{prefix}_ids": _ids_text(short.ids()), f"{prefix}_los": _ids_text(long.bounds[0::2]),
            f"{prefix}_his": _ids_text(long.bounds[1::2])}


def _without_special_ids(xids: XidSet) -> XidSet:
    """`xids` less the ids PostgreSQL never hands out (0, 1 and 2 of each epoch), which `pg_xact_status`
    refuses."""
    if not xids:
        return xids
    epochs = range(xids.bounds[0] >> 32, (xids.bounds[-1] >> 32) + 1)
    return xids - XidSet.of_bounds(b for epoch in epochs for b in (epoch << 32, (epoch << 32) + 3))


def _of_ids_text(text: str) -> XidSet:
    """The set of the ids in PostgreSQL's array text (`{}` or `{1,2,5}`), in any order."""
    return XidSet.of_ids(sorted(map(int, text[1:-1].split(",")))) if text != "{}" else XidSet()


def _ids_text(ids) -> str:
    """Integers as array text (built from ints, never from input)."""
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def begin_snapshot(conn: Connection) -> None:
    """Open the run's REPEATABLE READ READ ONLY transaction holding the snapshot lock.

    The lock is a transaction-level advisory lock (any role may take one; it writes nothing), so it
    lives and dies with the transaction: through a pooler in transaction mode (PgBouncer) a session
    lock would stay with whichever server connection took it. For the same reason every statement
    of the ingest runs inside an explicit transaction: outside one, such a pooler may hand the
    parts of one extended-protocol query to different server connections. The lock is tried in the statement
    that fixes the snapshot; when another ingest holds it, this transaction ends, waits for the
    holder to finish, and starts again, so a snapshot taken under the lock is never older than one
    taken by an ingest that held it first. The transaction holds the lock until it ends: ingests
    take their snapshots one after the other, and run ids sort like snapshots (the loader keeps
    the latest run's version, ADR 0002).
    """
    while True:
        conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            if conn.run("SELECT pg_try_advisory_xact_lock(CAST(:key AS bigint))", key=SNAPSHOT_LOCK_KEY)[0][0]:
                return
            conn.run("ROLLBACK")
            with transaction(conn, read_only=True):  # wait for the holder; released at once
                conn.run("SELECT pg_advisory_xact_lock(CAST(:key AS bigint))", key=SNAPSHOT_LOCK_KEY)
        except BaseException:
            rollback_quietly(conn)
            raise


def take_snapshot(conn: Connection, running: XidSet, next_before: int) -> Cut:
    """The run's snapshot (fixed by `begin_snapshot`'s first statement), with the ids it counts as
    in progress: those `in_progress_before` found running, and every id handed out since, whether
    or not PostgreSQL's own snapshot lists it (it leaves out a running transaction whose id is at
    or above its xmax, and on a hot standby lists none). The next unassigned id, read through
    `age(xid)` (next id minus `xid` for a transaction without one, open to any role), becomes the
    recorded xmax: the same visibility, every late transaction named. The cut-off is the source's
    clock in UTC, whatever zone the server or the writers use; the run is named by
    `clock_timestamp()`, read after the lock was taken.
    """
    snapshot, cutoff, now, reference, age = conn.run(
        "SELECT snap::text, now() AT TIME ZONE 'UTC', clock_timestamp(), ref, age((ref % 4294967296)::text::xid)"
        " FROM (SELECT snap, CASE WHEN xmax % 4294967296 < 3 THEN xmax - 3 ELSE xmax END AS ref FROM ("
        "  SELECT pg_current_snapshot() AS snap,"
        "   pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax) AS s) AS r")[0]
    pg_snapshot = Snapshot.parse(snapshot)
    next_xid = max(reference + age, pg_snapshot.xmax)
    current = Snapshot(pg_snapshot.xmin, next_xid, pg_snapshot.xip)
    in_progress = ((running | XidSet.span(min(next_before, next_xid), next_xid) | XidSet((x, x + 1) for x in
                    pg_snapshot.xip)) & XidSet.span(current.xmin, next_xid))
    return Cut(current, in_progress, cutoff, now, read_identity(conn))


def everything_in_progress(cut: Cut) -> Cut:
    """The cut with every id from its xmin on counted as in progress: after a restore the ids the
    previous run asked about mean nothing, so this run reads only what had certainly ended and the
    next run reads the rest."""
    return replace(cut, in_progress=XidSet.span(cut.snapshot.xmin, cut.snapshot.xmax))


def plan_read(previous: Watermark | None, cut: Cut, full_rescan_seconds: float) -> Plan:
    """Decide how this run reads (see the module docstring)."""
    if previous is None:
        return Plan(None, cut.snapshot, "first", cut.in_progress)
    if _rescan_due(previous, cut.now, full_rescan_seconds):
        return Plan(previous, cut.snapshot, "rescan", cut.in_progress)
    ended = bool(previous.in_progress - cut.in_progress)
    return Plan(previous, cut.snapshot, "full" if ended else "recent", cut.in_progress)


def _rescan_due(previous: Watermark, now: datetime, full_rescan_seconds: float) -> bool:
    if previous.rescanned_at is None or len(previous.unread) >= MAX_UNREAD:
        return True
    last = lake.run_time(previous.rescanned_at)
    return abs((now - last).total_seconds()) >= full_rescan_seconds  # a clock stepped back counts as due


def xid8_of_xmin(current_xmax: int) -> str:
    """SQL for the row's 64-bit `xmin` as a bigint, given the current snapshot's xmax.

    The `xmin` system column is a 32-bit xid. A row that is not frozen was written within 2^31 ids
    before the current xmax (PostgreSQL freezes it before then), so it lies in xmax's epoch, or the
    one before when adding xmax's epoch would put it at or past xmax. A frozen row keeps its raw
    xmin and may be older than 2^32 ids: it then reads as a recent id. Where that id is in
    progress, the row is skipped (a running transaction's rows are invisible, so a visible row
    with its id must be such a frozen one); where that id has ended, the row may be read once more
    (the bound in ADR 0001).
    """
    raw = "xmin::text::bigint"
    base = current_xmax >> 32 << 32
    if base == 0:
        return raw
    return f"(CASE WHEN {base} + {raw} >= {current_xmax} THEN {base - XID_SPAN} ELSE {base} END + {raw})"


#: Past this many ranges a set is tested as a sorted array of bounds (see `in_xids`).
MANY_RANGES = 64


def in_xids(x: str, xids: XidSet) -> str:
    """SQL: the id `x` is in `xids`.

    A few ranges read best as `x <@ '{[a,b),...}'::int8multirange`. A fragmented set (savepoints
    interleaved with commits: 100,000 ranges) does not: PostgreSQL parses such a literal at about
    5 µs a range, half a second per statement and per set. Its bounds as a sorted `bigint[]` parse
    ten times faster, and `width_bucket(x, bounds)`, a binary search, counts the bounds at or
    below x: odd exactly when x lies in one of the half-open ranges. Same set, same answer.
    """
    if len(xids) <= MANY_RANGES:
        return f"{x} <@ {literal(str(xids))}::int8multirange"
    return f"width_bucket({x}, {_bounds(xids)}) % 2 = 1"


@lru_cache(maxsize=4)
def _bounds(xids: XidSet) -> str:
    """`xids`' bounds as a `bigint[]` literal, built from integers (made once per set: every table's
    statement of a run carries the same sets)."""
    return f"'{_bounds_text(xids)}'::bigint[]"


def _bounds_text(xids: XidSet) -> str:
    return _ids_text(xids.bounds)


def _stamp(moment: datetime) -> str:
    return f"{literal(format_cutoff(moment))}::timestamp"


def changes_query(table: Table, plan: Plan) -> str:
    """The SELECT of `table`'s versions this run ships (all rows on the first run).

    Never a version of an id this run counts as in progress: the next run reads those. The ids are
    one exact set per statement (`Plan.reads`, and each claim's on a rescan), computed in Python.
    """
    columns = column_list(table.column_names)
    source = f"public.{identifier(table.name)}"  # contract §2: the tables live in public, whatever search_path says
    # Identifiers from the declaration, quoted; values in the condition are literal()s of parsed numbers/times.
    select = f"SELECT {columns} FROM {source}"  # nosec B608
    condition = plan.condition.sql(xid8_of_xmin(plan.condition.xmax))
    return f"{select} WHERE {condition}" if condition else select


def unread_after(plan: Plan) -> list[Unread]:
    """What the next run inherits unread.

    Nothing after a rescan or a first run. After a run that read recent stamps only: what was
    unread, plus the versions of ids that first became visible to it, stamped before its window.
    After a run that read every stamp of every id unseen by P: only the part of each claim that
    lies outside that (ids below P.xmin, or in P.seen).
    """
    previous = plan.previous
    if previous is None or plan.mode in ("first", "rescan"):
        return []
    if plan.mode == "recent":
        unread = list(previous.unread)
        if previous.snapshot.xmax < plan.current.xmax:
            xids = f"{{[{previous.snapshot.xmax},{plan.current.xmax})}}"
            unread.append(Unread(xids, previous.cutoff - OVERLAP))
        return unread
    outside = XidSet.span(0, previous.snapshot.xmin) | previous.seen_xids
    left = [(XidSet.parse(claim.xids) & outside, claim.stamped_up_to) for claim in previous.unread]
    return [Unread(str(xids), stamped_up_to) for xids, stamped_up_to in left if xids]


def rescanned_at(plan: Plan, run_id: str) -> str | None:
    return run_id if plan.mode in ("first", "rescan") else plan.previous.rescanned_at


def extract_table(conn: Connection, query: str, path: str, grown: Callable[[int], None] | None = None,
                  every: int = 0) -> int:
    """COPY the query's rows as CSV with a header to `path`, streamed; the number of rows.

    PostgreSQL's CSV: an unquoted empty field is NULL and `""` the empty string. `grown` is told
    the file's size, flushed, each time it has grown by `every` bytes more (so an upload can
    start before the COPY ends: s3.GrowingUpload).
    """
    with open(path, "wb", buffering=1 << 20) as file:
        return copy_out(conn, query, _Reporting(file, grown, every) if grown else file)


class _Reporting:
    """A file written by COPY that reports its flushed size to `grown` every `every` bytes."""

    def __init__(self, file: BinaryIO, grown: Callable[[int], None], every: int):
        self.file, self.grown, self.every, self.size, self.reported = file, grown, every, 0, 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)
        if self.size - self.reported >= self.every:
            self.file.flush()
            self.reported = self.size
            self.grown(self.size)
