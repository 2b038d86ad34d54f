"""What changed since the previous run, as SQL, and COPY of it to a local CSV file.

A row version is new iff the previous run's snapshot P could not have seen it (ADR 0001). A
visible row whose `xmin` is below P's xmin was committed before P began, so P saw it; any other
one may not have been: P lists only top-level transactions as in progress, and a row written
inside a savepoint carries a subtransaction id that `pg_visible_in_snapshot` would wrongly call
visible. So "unseen" is `xmin8 >= P.xmin`, which re-reads the few versions P did see from
transactions that ended while an older one was still running (downstream ignores a version it
holds) and never drops one it did not. Per table:

(a) `last_updated > P.cutoff - OVERLAP AND xmin8 >= P.xmin`: recent versions (an index range
    when the source has an index on `last_updated`), minus those P certainly saw;
(b) only when P had transactions in progress (P.xmin < P.xmax): `last_updated <= P.cutoff -
    OVERLAP AND xmin8 >= P.xmin`: versions those transactions (or their savepoints) wrote and
    committed after P, however old their `last_updated` (late commits, no time bound).

The two branches are disjoint on `last_updated`, so `UNION ALL` never doubles a row.

COPY takes no bind parameters, so the few values in these statements are built from integers
and datetimes parsed out of the previous manifest (never from its text) and quoted with pg8000's
`literal()`; identifiers come from the schema declaration, quoted with `identifier()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pg8000.native import identifier, literal

from totesys_etl.adapters.postgres import Connection, copy_out
from totesys_etl.ingest.watermark import OVERLAP, Snapshot, Watermark
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table

_XID_SPAN = 1 << 32


@dataclass(frozen=True)
class Cut:
    """This run's consistent view: its snapshot, its cut-off (the source's local time, like
    `last_updated`) and the database's `now()` in UTC, which names the run."""

    snapshot: Snapshot
    cutoff: datetime
    now: datetime


def take_snapshot(conn: Connection) -> Cut:
    """The first statement of the run's REPEATABLE READ transaction: it fixes the snapshot that
    every COPY of the run reads, and the cut-off comes from the database, not the Lambda clock.

    `pg_current_snapshot()` leaves out transactions that are running but started after the most
    recent commit (they are at or above its xmax, "not yet started"). The next run must know
    them to re-read their writes once they commit, so the snapshot is widened to the next
    transaction id still unassigned when it was taken, with every id in between listed as in
    progress: the same visibility, every late transaction named. A role without privileges reads
    that next id through `age(xid)`, which is next id minus `xid` for a transaction without one.
    """
    snapshot, cutoff, now, reference, age = conn.run(
        "SELECT snap::text, LOCALTIMESTAMP, now(), ref, age((ref % 4294967296)::text::xid) FROM ("
        " SELECT snap, CASE WHEN xmax % 4294967296 < 3 THEN xmax - 3 ELSE xmax END AS ref FROM ("
        "  SELECT pg_current_snapshot() AS snap,"
        "   pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax) AS s) AS r")[0]
    return Cut(Snapshot.parse(snapshot).widened_to(reference + age), cutoff, now)


def xid8_of_xmin(current_xmax: int) -> str:
    """SQL for the row's 64-bit `xmin` (xid8), given the current snapshot's xmax.

    The `xmin` system column is a 32-bit xid; a visible row's transaction began within 2^31 ids
    before the current xmax, so it lies in xmax's epoch, or the one before when adding xmax's
    epoch would put it at or past xmax. (A frozen row keeps its raw xmin; should it alias into a
    recent epoch, the worst outcome is one old version read again, which downstream ignores.)
    """
    raw = "xmin::text::bigint"
    base = current_xmax >> 32 << 32
    if base == 0:
        return f"{raw}::text::xid8"
    return (f"(CASE WHEN {base} + {raw} >= {current_xmax} THEN {base - _XID_SPAN} ELSE {base} END"
            f" + {raw})::text::xid8")


def changes_query(table: Table, previous: Watermark | None, current: Snapshot) -> str:
    """The SELECT of `table`'s versions that `previous` did not see (all rows without one)."""
    columns = column_list(table.column_names)
    source = f"public.{identifier(table.name)}"  # SPEC §2: the tables live in public, whatever search_path says
    # Identifiers from the declaration, quoted; values below are literal()s of parsed numbers/times.
    select = f"SELECT {columns} FROM {source}"  # nosec B608
    if previous is None:
        return select
    last_updated = identifier("last_updated")
    since = literal((previous.cutoff - OVERLAP).isoformat(sep=" ", timespec="microseconds"))
    unseen = f"{xid8_of_xmin(current.xmax)} >= {literal(str(previous.snapshot.xmin))}::xid8"
    query = f"{select} WHERE {last_updated} > {since}::timestamp AND {unseen}"
    if previous.snapshot.xmin < previous.snapshot.xmax:
        query += f" UNION ALL {select} WHERE {last_updated} <= {since}::timestamp AND {unseen}"
    return query


def extract_table(conn: Connection, query: str, path: str) -> int:
    """COPY the query's rows as CSV with a header to `path`, streamed; the number of rows.

    PostgreSQL's CSV: an unquoted empty field is NULL and `""` the empty string.
    """
    with open(path, "wb", buffering=1 << 20) as stream:
        return copy_out(conn, query, stream)
