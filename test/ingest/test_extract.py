"""The change query's pieces, checked against real PostgreSQL 15 as the read-only role."""
from __future__ import annotations

from datetime import datetime

import pg8000.native

from totesys_etl.adapters.postgres import parse_url, transaction
from totesys_etl.ingest.extract import changes_query, take_snapshot, xid8_of_xmin
from totesys_etl.ingest.watermark import Snapshot, Watermark
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


def test_the_snapshot_names_a_running_transaction_above_xmax_and_keeps_its_visibility(source, run_sql):
    run_sql(source.admin_url, "CREATE TABLE t (x int)")
    writer = pg8000.native.Connection(**parse_url(source.admin_url))
    reader = pg8000.native.Connection(**parse_url(source.reader_url))
    try:
        writer.run("BEGIN")
        writer.run("INSERT INTO t VALUES (1)")
        running = int(writer.run("SELECT pg_current_xact_id()::text")[0][0])
        with transaction(reader, "REPEATABLE READ", read_only=True):
            raw = reader.run("SELECT pg_current_snapshot()::text")[0][0]  # what PostgreSQL says
        with transaction(reader, "REPEATABLE READ", read_only=True):
            cut = take_snapshot(reader)
        assert running >= Snapshot.parse(raw).xmax  # PostgreSQL's own snapshot does not list it
        assert running in cut.snapshot.xip and cut.snapshot.xmax > running
        assert isinstance(cut.cutoff, datetime) and cut.cutoff.tzinfo is None and cut.now.tzinfo is not None
        ids = range(Snapshot.parse(raw).xmin - 2, cut.snapshot.xmax + 3)
        same = reader.run(
            "SELECT bool_and(pg_visible_in_snapshot(x::text::xid8, CAST(:a AS pg_snapshot)) = "
            "pg_visible_in_snapshot(x::text::xid8, CAST(:b AS pg_snapshot))) "
            "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) x",
            a=raw, b=str(cut.snapshot), lo=ids.start, hi=ids.stop)
        assert same == [[True]]
    finally:
        writer.run("ROLLBACK")
        writer.close()
        reader.close()


def test_the_query_reads_everything_first_then_only_unseen_versions():
    table = source_table("currency")
    assert changes_query(table, None, Snapshot(5, 5)) == (
        'SELECT "currency_id", "currency_code", "created_at", "last_updated" FROM public."currency"')
    cutoff = datetime(2026, 11, 24, 7, 30)
    quiet = changes_query(table, Watermark("r", Snapshot(90, 90), cutoff), Snapshot(100, 100))
    assert "'2026-11-24 07:15:00.000000'::timestamp" in quiet and ">= '90'::xid8" in quiet
    assert "UNION ALL" not in quiet  # nothing was in progress at P: no late commit to look for
    previous = Watermark("r", Snapshot(EPOCH + 1, EPOCH + 9, (EPOCH + 1, EPOCH + 4)), cutoff)
    busy = changes_query(table, previous, Snapshot(EPOCH + 20, EPOCH + 20))
    assert busy.count("UNION ALL") == 1 and busy.count(f">= '{EPOCH + 1}'::xid8") == 2
    assert "\"last_updated\" <= '2026-11-24 07:15:00.000000'::timestamp" in busy
