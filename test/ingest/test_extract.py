"""The change query's pieces, checked against real PostgreSQL 15 as the read-only role."""
from __future__ import annotations

from datetime import datetime, timezone

import pg8000.native

from totesys_etl.adapters.postgres import parse_url, transaction
from totesys_etl.ingest.extract import (MANY_RANGES, Cut, begin_snapshot, changes_query, in_progress_before, in_xids,
                                        plan_read, take_snapshot, unread_after, xid8_of_xmin)
from totesys_etl.ingest.watermark import Snapshot, Unread, Watermark
from totesys_etl.ingest.xids import XidSet
from totesys_etl.schema import source_table

EPOCH = 1 << 32


def test_xmin_becomes_the_right_64_bit_id_in_this_epoch_or_the_one_before(source, run_sql):
    def widen(xids: list[int], current_xmax: int) -> list[int]:
        values = ", ".join(f"('{x}'::xid)" for x in xids)
        rows = run_sql(source.reader_url,
                       f"SELECT {xid8_of_xmin(current_xmax)}::text FROM (VALUES {values}) AS v(xmin)")
        return [int(r[0]) for r in rows]

    assert widen([3, 500, 999], 1000) == [3, 500, 999]
    assert widen([5, 99, 100, 4294967000], EPOCH + 100) == [EPOCH + 5, EPOCH + 99, 100, 4294967000]
    assert widen([7], 3 * EPOCH + 8) == [3 * EPOCH + 7]


def test_the_snapshot_counts_a_running_transaction_above_xmax_and_a_savepoints_id_as_in_progress(source, run_sql):
    run_sql(source.admin_url, "CREATE TABLE t (x int)")
    writer = pg8000.native.Connection(**parse_url(source.admin_url))
    reader = pg8000.native.Connection(**parse_url(source.reader_url))
    try:
        writer.run("BEGIN")
        writer.run("INSERT INTO t VALUES (1)")
        running = int(writer.run("SELECT pg_current_xact_id()::text")[0][0])
        writer.run("SAVEPOINT s")
        writer.run("INSERT INTO t VALUES (2)")
        nested = int(writer.run("SELECT xmin::text FROM t WHERE x = 2")[0][0])  # the savepoint's own id
        run_sql(source.admin_url, "INSERT INTO t VALUES (3)")  # a commit after both: xmax passes them
        with transaction(reader, "REPEATABLE READ", read_only=True):
            raw = Snapshot.parse(reader.run("SELECT pg_current_snapshot()::text")[0][0])  # what PostgreSQL says
        before, next_xid = in_progress_before(reader, None)
        begin_snapshot(reader)
        try:
            cut = take_snapshot(reader, before, next_xid)
        finally:
            reader.run("ROLLBACK")
        assert nested > running and nested not in raw.xip  # PostgreSQL's snapshot never lists a savepoint's id
        assert running in cut.in_progress and nested in cut.in_progress and cut.snapshot.xmax >= next_xid
        assert nested not in cut.seen and cut.seen == XidSet.span(cut.snapshot.xmin + 1, cut.snapshot.xmax) - \
            cut.in_progress
        assert isinstance(cut.cutoff, datetime) and cut.cutoff.tzinfo is None and cut.now.tzinfo is not None
        assert cut.identity.system and cut.identity.timeline == 1 and not cut.identity.standby
    finally:
        writer.run("ROLLBACK")
        writer.close()
        reader.close()


def _cut(snapshot: Snapshot, now=datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc), in_progress=None) -> Cut:
    return Cut(snapshot, in_progress if in_progress is not None else XidSet((x, x + 1) for x in snapshot.xip),
               now.replace(tzinfo=None), now)


def test_the_query_reads_everything_first_then_recent_stamps_then_every_stamp():
    table = source_table("currency")
    first = plan_read(None, _cut(Snapshot(5, 5)), 3600)
    assert first.mode == "first" and changes_query(table, first) == (
        'SELECT "currency_id", "currency_code", "created_at", "last_updated" FROM public."currency"')
    cutoff = datetime(2026, 11, 24, 7, 30)
    rescanned = "20261124T073000000000Z"
    quiet = plan_read(Watermark("r", Snapshot(90, 90), cutoff, rescanned_at=rescanned), _cut(Snapshot(100, 100)), 3600)
    assert quiet.mode == "recent"
    sql = changes_query(table, quiet)
    assert sql.endswith("WHERE \"last_updated\" > '2026-11-23 17:30:00.000000'::timestamp AND "
                        "(xmin::text::bigint <@ '{[90,9223372036854775807)}'::int8multirange)")
    # P had 91, 93 and 94..98 in progress (the ids it had not seen); 93 to 98 have ended since: P's late
    # writes may carry any stamp. The run never reads an id it counts as in progress itself (91).
    previous = Watermark("r", Snapshot(91, 99, (91, 94)), cutoff, seen="{[92,93)}", rescanned_at=rescanned,
                         unread=(Unread("{[80,85)}", datetime(2026, 11, 24, 7, 0)),))
    busy = plan_read(previous, _cut(Snapshot(91, 120, (91,))), 3600)
    assert busy.mode == "full"
    sql = changes_query(table, busy)
    # From 91 on, less P.seen (92) and less what runs now (91): one exact set, any stamp.
    assert sql.endswith("WHERE (xmin::text::bigint <@ '{[93,9223372036854775807)}'::int8multirange)")
    assert "[80,85)" not in sql  # claims are for the scan by transaction id alone
    late = plan_read(previous, _cut(Snapshot(91, 120, (91,)), datetime(2026, 11, 24, 8, 30, tzinfo=timezone.utc)),
                     3600)
    assert late.mode == "rescan" and "<@ '{[80,85)}'::int8multirange) AND \"last_updated\" <= '2026-11-24 07:00" \
        in changes_query(table, late)
    assert plan_read(previous, _cut(Snapshot(91, 120, (91,))), 0).mode == "rescan"
    assert plan_read(Watermark("r", Snapshot(90, 90), cutoff), _cut(Snapshot(100, 100)), 3600).mode == "rescan"


def test_a_fragmented_set_is_tested_by_binary_search_with_the_same_answers_as_a_multirange(source, run_sql):
    """Past MANY_RANGES ranges `in_xids` tests membership with width_bucket over the bounds (PostgreSQL
    parses a 100,000-range multirange literal in about half a second per statement)."""
    fragmented = XidSet((x, x + 1) for x in range(10, 1000, 3)) | XidSet.span(2000, 2005)
    assert len(fragmented.ranges) > MANY_RANGES
    condition = in_xids("g", fragmented)
    assert condition.startswith("width_bucket(g, '{10,11,13,14,")
    inside = run_sql(source.reader_url, f"SELECT g FROM generate_series(0, 2100) AS g WHERE {condition}")  # nosec
    assert [g for (g,) in inside] == [x for lo, hi in fragmented.ranges for x in range(lo, hi)]
    assert in_xids("g", XidSet.span(1, 5)) == "g <@ '{[1,5)}'::int8multirange"


def test_a_recent_run_leaves_its_new_ids_old_stamps_unread_and_a_full_run_keeps_only_what_it_could_not_read():
    cutoff = datetime(2026, 11, 24, 7, 30)
    claim = Unread("{[80,100)}", datetime(2026, 11, 24, 7, 0))
    previous = Watermark("r", Snapshot(90, 95, (90, 93)), cutoff, seen="{[91,92)}", unread=(claim,),
                         rescanned_at="20261124T073000000000Z")
    recent = plan_read(previous, _cut(Snapshot(90, 110, (90, 93)), in_progress=XidSet([(90, 91), (92, 95)])), 3600)
    assert recent.mode == "recent"
    assert unread_after(recent) == [claim, Unread("{[95,110)}", datetime(2026, 11, 23, 17, 30))]
    full = plan_read(previous, _cut(Snapshot(90, 110, (90,))), 3600)
    assert full.mode == "full"
    # The full run read every stamp of ids >= 90 not in P.seen: what stays unread is below 90 or in it.
    assert unread_after(full) == [Unread("{[80,90),[91,92)}", claim.stamped_up_to)]
    assert unread_after(plan_read(previous, _cut(Snapshot(90, 110, (90,))), 0)) == []
