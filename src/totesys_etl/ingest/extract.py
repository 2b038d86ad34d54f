"""What changed since the previous run, as SQL, and COPY of it to a local CSV file.

A row version is identified by its writer's transaction id `x` (the row's `xmin`, made 64-bit) and
its stamp `s` (`last_updated`). The previous run P left in its manifest (watermark.py) its
snapshot, `P.seen` (the ids between its xmin and xmax, not in progress, whose versions it saw) and
`P.unread` (id ranges whose old-stamped versions no run has read yet). A version is *unseen by P*
iff `x >= P.xmin AND x NOT IN P.seen`: every id below P.xmin had ended before P, every id in
P.seen was seen, and any other id was in progress at P, started after it, or belongs to a
savepoint of a transaction in progress (a subtransaction id, which `pg_snapshot` never lists).
Each run reads, per table, in one of three ways (readme_files/adr/0001-late-commits.md):

- **recent** (nothing P had in progress has ended): unseen versions stamped after `P.cutoff -
  OVERLAP`, an index range when the source indexes `last_updated`. Versions of ids that first
  became visible to this run but are stamped earlier are left `unread`: they wait for a run that
  reads every stamp.
- **full** (something P had in progress has ended: it may have written old stamps): every unseen
  version whatever its stamp (a sequential scan). What it read is no longer `unread`.
- **rescan** (the first run; or `full_rescan_seconds` since the last scan): as full, plus every
  `unread` version. Nothing is left unread afterwards.

So a run ships what changed since the previous run however long a transaction stays open, and
never ships a version a run already shipped. COPY takes no bind parameters, so the few values in
these statements are built from integers, validated id-range text and datetimes parsed out of
the previous manifest (never copied from its text unchecked), quoted with pg8000's `literal()`;
identifiers come from the schema declaration, quoted with `identifier()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable
from datetime import datetime, timezone

from pg8000.native import identifier, literal

from totesys_etl.adapters.postgres import Connection, copy_out
from totesys_etl.ingest.watermark import NO_XIDS, OVERLAP, Snapshot, Unread, Watermark, format_cutoff, xid_ranges
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table

_XID_SPAN = 1 << 32
#: The source-wide advisory lock key (any 64-bit constant) under which a run takes its snapshot and
#: names itself, so that run ids sort in snapshot order even when two ingests start together.
SNAPSHOT_LOCK_KEY = 0x746F7465_73797331  # "totesys1"
#: Past this many unread claims a run scans by transaction id at once, so statements stay short.
MAX_UNREAD = 200


@dataclass(frozen=True)
class Cut:
    """This run's consistent view: its snapshot, its cut-off (the source's local time, like
    `last_updated`) and the database's clock in UTC just after the snapshot, which names the run."""

    snapshot: Snapshot
    cutoff: datetime
    now: datetime


@dataclass(frozen=True)
class Plan:
    """How this run reads every table: `mode` is `first`, `recent`, `full` or `rescan`."""

    previous: Watermark | None
    current: Snapshot
    mode: str

    @property
    def reads_every_stamp(self) -> bool:
        return self.mode != "recent"


def lock_snapshot_order(conn: Connection) -> None:
    """Hold the snapshot lock for this session (released by `release_snapshot_order`, or by the
    session's end). Any role may take an advisory lock; it writes nothing in the source."""
    conn.run("SELECT pg_advisory_lock(CAST(:key AS bigint))", key=SNAPSHOT_LOCK_KEY)


def release_snapshot_order(conn: Connection) -> None:
    conn.run("SELECT pg_advisory_unlock(CAST(:key AS bigint))", key=SNAPSHOT_LOCK_KEY)


def take_snapshot(conn: Connection) -> Cut:
    """The first statement of the run's REPEATABLE READ transaction: it fixes the snapshot that
    every COPY of the run reads, and the cut-off comes from the database, not the Lambda clock.

    `pg_current_snapshot()` leaves out transactions that are running but started after the most
    recent commit (they are at or above its xmax, "not yet started"). The next run must know
    them to re-read their writes once they commit, so the snapshot is widened to the next
    transaction id still unassigned when it was taken, with every id in between listed as in
    progress: the same visibility, every late transaction named. A role without privileges reads
    that next id through `age(xid)`, which is next id minus `xid` for a transaction without one.
    The run is named by `clock_timestamp()`, read after the snapshot; under the snapshot lock, a
    later snapshot therefore always gets a later run id (the loader relies on that order).
    """
    snapshot, cutoff, now, reference, age = conn.run(
        "SELECT snap::text, LOCALTIMESTAMP, clock_timestamp(), ref, age((ref % 4294967296)::text::xid) FROM ("
        " SELECT snap, CASE WHEN xmax % 4294967296 < 3 THEN xmax - 3 ELSE xmax END AS ref FROM ("
        "  SELECT pg_current_snapshot() AS snap,"
        "   pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax) AS s) AS r")[0]
    return Cut(Snapshot.parse(snapshot).widened_to(reference + age), cutoff, now)


def plan_read(previous: Watermark | None, cut: Cut, full_rescan_seconds: float) -> Plan:
    """Decide how this run reads (see the module docstring)."""
    if previous is None:
        return Plan(None, cut.snapshot, "first")
    if _rescan_due(previous, cut.now, full_rescan_seconds):
        return Plan(previous, cut.snapshot, "rescan")
    ended = any(_ended(x, cut.snapshot) for x in previous.snapshot.xip)
    return Plan(previous, cut.snapshot, "full" if ended else "recent")


def _rescan_due(previous: Watermark, now: datetime, full_rescan_seconds: float) -> bool:
    if previous.rescanned_at is None or len(previous.unread) >= MAX_UNREAD:
        return True
    last = datetime.strptime(previous.rescanned_at, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    return (now - last).total_seconds() >= full_rescan_seconds


def _ended(xid: int, snapshot: Snapshot) -> bool:
    """True if transaction `xid` had ended when `snapshot` was taken."""
    return xid < snapshot.xmin or (xid < snapshot.xmax and xid not in snapshot.xip)


def xid8_of_xmin(current_xmax: int) -> str:
    """SQL for the row's 64-bit `xmin` as a bigint, given the current snapshot's xmax.

    The `xmin` system column is a 32-bit xid; a visible row's transaction began within 2^31 ids
    before the current xmax, so it lies in xmax's epoch, or the one before when adding xmax's
    epoch would put it at or past xmax. (A frozen row keeps its raw xmin; should it alias into a
    recent epoch, the worst outcome is one old version read again, which downstream ignores.)
    """
    raw = "xmin::text::bigint"
    base = current_xmax >> 32 << 32
    if base == 0:
        return raw
    return f"(CASE WHEN {base} + {raw} >= {current_xmax} THEN {base - _XID_SPAN} ELSE {base} END + {raw})"


def _xids(text: str) -> str:
    return f"{literal(xid_ranges(text))}::int8multirange"


def _stamp(moment: datetime) -> str:
    return f"{literal(format_cutoff(moment))}::timestamp"


def _unread_condition(x: str, unread: tuple[Unread, ...]) -> str | None:
    last_updated = identifier("last_updated")
    claims = [f"({x} <@ {_xids(u.xids)} AND {last_updated} <= {_stamp(u.stamped_up_to)})" for u in unread]
    return " OR ".join(claims) or None


def changes_query(table: Table, plan: Plan) -> str:
    """The SELECT of `table`'s versions this run ships (all rows on the first run)."""
    columns = column_list(table.column_names)
    source = f"public.{identifier(table.name)}"  # contract §2: the tables live in public, whatever search_path says
    # Identifiers from the declaration, quoted; values below are literal()s of parsed numbers/times.
    select = f"SELECT {columns} FROM {source}"  # nosec B608
    previous = plan.previous
    if previous is None:
        return select
    x = xid8_of_xmin(plan.current.xmax)
    where = f"{x} >= {int(previous.snapshot.xmin)}"
    if previous.seen != NO_XIDS:
        where += f" AND NOT ({x} <@ {_xids(previous.seen)})"
    if not plan.reads_every_stamp:
        since = _stamp(previous.cutoff - OVERLAP)
        return f"{select} WHERE {identifier('last_updated')} > {since} AND {where}"
    unread = _unread_condition(x, previous.unread) if plan.mode == "rescan" else None
    if unread:
        where = f"({where}) OR {unread}"
    return f"{select} WHERE {where}"


def seen_query(tables: list[Table], plan: Plan) -> str | None:
    """The SELECT of this run's `seen`: ids strictly between its snapshot's xmin and xmax, not in
    progress, whose versions this run read or the previous run had seen. None when every id in
    that range was in progress (nothing to tell apart).

    The next run cannot tell such an id's visibility from this snapshot alone (a savepoint's id is
    never listed as in progress), so this run records what it actually saw.
    """
    current = plan.current
    between = range(current.xmin + 1, current.xmax)
    if len(between) <= len([x for x in current.xip if x in between]):
        return None
    x = xid8_of_xmin(current.xmax)
    observed = f"{x} > {int(current.xmin)} AND {x} < {int(current.xmax)}"
    if not plan.reads_every_stamp:
        since = _stamp(plan.previous.cutoff - OVERLAP)
        observed += f" AND {identifier('last_updated')} > {since} AND {x} >= {int(plan.previous.snapshot.xmin)}"
    union = " UNION ".join(f"SELECT {x} AS x FROM public.{identifier(t.name)} WHERE {observed}"  # nosec B608
                           for t in tables)
    carried = _xids(plan.previous.seen if plan.previous else NO_XIDS)
    return (f"SELECT ((coalesce(range_agg(int8range(x, x + 1)), '{{}}'::int8multirange) + {carried})"  # nosec
            f" * int8multirange(int8range({int(current.xmin)}, {int(current.xmax)}, '()')))::text FROM ({union}) AS s")


def unread_after(conn: Connection, plan: Plan) -> list[Unread]:
    """What the next run inherits unread.

    Nothing after a rescan or a first run. After a run that read recent stamps only: what was
    unread, plus the versions of ids that first became visible to it, stamped before its window.
    After a run that read every stamp of every id unseen by P: only the part of each claim that
    lies outside that (ids below P.xmin, or in P.seen), computed by PostgreSQL's multirange algebra.
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
    if not previous.unread:
        return []
    rows = conn.run("SELECT (CAST(c AS int8multirange) * (int8multirange(int8range(NULL, CAST(:xmin AS bigint)))"
                    " + CAST(:seen AS int8multirange)))::text FROM unnest(CAST(:claims AS text[])) WITH ORDINALITY"
                    " AS u(c, n) ORDER BY n",  # one round trip for every claim, in their order
                    claims=[c.xids for c in previous.unread], xmin=previous.snapshot.xmin, seen=previous.seen)
    return [Unread(left, claim.stamped_up_to) for (left,), claim in zip(rows, previous.unread) if left != NO_XIDS]


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
