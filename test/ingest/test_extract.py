"""The change query's pieces, checked against real PostgreSQL 15 as the read-only role."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pg8000.native

from totesys_etl.adapters.postgres import parse_url, transaction
from totesys_etl.ingest.extract import (MANY_RANGES, Cut, ReadCondition, begin_snapshot, changes_query,
                                        in_progress_before, in_xids, plan_read, take_snapshot, unread_after,
                                        xid8_of_xmin)
from totesys_etl.ingest.watermark import Snapshot, Unread, Watermark, format_cutoff
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


def test_a_condition_answers_for_one_version():
    """`ReadCondition.has` on hand-picked versions: a first read, a recent one, a rescan with a claim."""
    s1, s2 = datetime(2024, 1, 8, 1, 9), datetime(2024, 1, 9, 7, 0)
    first = ReadCondition(EPOCH + 100, XidSet.span(EPOCH + 90, EPOCH + 100))
    assert first.has(700, s1) and first.has(EPOCH + 89, s1) and not first.has(EPOCH + 95, s1)
    recent = ReadCondition(EPOCH + 200, XidSet(), XidSet.span(EPOCH + 100, EPOCH + 200), after=s1)
    assert recent.has(EPOCH + 150, s2) and not recent.has(EPOCH + 150, s1) and not recent.has(EPOCH + 50, s2)
    rescan = ReadCondition(EPOCH + 300, XidSet(), XidSet.span(EPOCH + 200, EPOCH + 300),
                           claims=((XidSet.span(EPOCH + 100, EPOCH + 200), s1 + timedelta(hours=1)),))
    assert rescan.has(EPOCH + 250, s2) and rescan.has(EPOCH + 150, s1) and not rescan.has(EPOCH + 150, s2)
    assert not rescan.has(EPOCH + 50, s1)


def _plans_of_every_mode() -> dict[str, object]:
    """Plans as `plan_read` makes them: a first read with nothing in progress and with a fragmented set in
    progress (past MANY_RANGES: the binary search), a recent read, a full one (something the previous run
    had in progress ended) and a rescan whose claims overlap what runs now, one of them fragmented."""
    e = EPOCH
    fragmented = XidSet((x, x + 1) for x in range(e + 130, e + 400, 3))
    running = XidSet.span(e + 90, e + 91) | XidSet.span(e + 100, e + 110)
    claims = (Unread(f"{{[{e + 20},{e + 60}),[{e + 80},{e + 95})}}", datetime(2026, 11, 24, 7, 0)),
              Unread(str(XidSet((x, x + 1) for x in range(e + 10, e + 330, 4))), datetime(2026, 11, 23, 12, 0, 0, 1)))
    previous = Watermark("r", Snapshot(e + 90, e + 120, (e + 90,)), datetime(2026, 11, 24, 7, 30, 0, 250000),
                         seen=str(XidSet.span(e + 91, e + 120) - running), running=str(running), unread=claims,
                         rescanned_at="20261124T073000000000Z")
    still = _cut(Snapshot(e + 90, e + 400), in_progress=running | fragmented)      # nothing P had running ended
    ended = _cut(Snapshot(e + 90, e + 400), in_progress=XidSet.span(e + 90, e + 91) | fragmented)
    plans = {"first": plan_read(None, _cut(Snapshot(e + 5, e + 5)), 3600),
             "first, in progress": plan_read(None, _cut(Snapshot(e + 100, e + 400), in_progress=fragmented), 3600),
             "recent": plan_read(previous, still, 3600), "full": plan_read(previous, ended, 3600),
             "rescan": plan_read(previous, ended, 0)}
    assert [plan.mode for plan in plans.values()] == ["first", "first", "recent", "full", "rescan"]
    assert len(plans["rescan"].condition.claims) == 2 and len(plans["recent"].condition.reads.ranges) > MANY_RANGES
    return plans


def test_the_sql_condition_and_has_agree_on_every_version_for_every_mode(source, run_sql):
    """The one rule, two renderings: for each plan, the SQL `changes_query` puts after WHERE, evaluated by
    PostgreSQL over a grid of (id, stamp) versions, selects exactly those `has` says the run reads
    (what `reconcile` relies on to prove a re-read after a wraparound). The ids are every bound of every
    set in the condition and their neighbours; the stamps every bound of the window and the claims, a
    microsecond either side."""
    for name, plan in _plans_of_every_mode().items():
        condition = plan.condition
        sets = [condition.in_progress, *([condition.reads] if condition.reads is not None else []),
                *(xids for xids, _ in condition.claims)]
        ids = sorted({b + d for xids in sets for b in xids.bounds for d in (-1, 0, 1) if b + d < 1 << 63}
                     | {0, 7, EPOCH, 3 * EPOCH})  # the bounds, an open end (2^63 - 1) included, less past bigint
        bounds = [t for t in [condition.after, *(up_to for _, up_to in condition.claims)] if t is not None]
        stamps = sorted({t + d * timedelta(microseconds=1) for t in bounds for d in (-1, 0, 1)}
                        | {datetime(2000, 1, 1), datetime(2100, 1, 1)})
        sql = condition.sql("x")
        assert changes_query(source_table("currency"), plan).endswith(
            f"WHERE {condition.sql(xid8_of_xmin(plan.current.xmax))}" if sql else '"currency"')
        text = "{" + ",".join(f'"{format_cutoff(t)}"' for t in stamps) + "}"
        selected = run_sql(source.reader_url, "SELECT x, last_updated FROM unnest(CAST(:ids AS bigint[])) AS a(x),"
                           f" unnest(CAST(:stamps AS timestamp[])) AS b(last_updated) WHERE {sql or 'TRUE'}",  # nosec
                           ids=ids, stamps=text)
        expected = {(x, t) for x in ids for t in stamps if condition.has(x, t)}
        assert {(x, t) for x, t in selected} == expected and len(selected) == len(expected), name
        if name != "first":  # a condition that tells versions apart, not one that takes all or none
            assert 0 < len(expected) < len(ids) * len(stamps), name
        assert not any(x in plan.in_progress for x, _ in expected), name  # never an id in progress now
