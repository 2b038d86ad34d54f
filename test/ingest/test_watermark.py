"""Snapshots and watermarks as the manifest records them, and the walk of the newest-first index."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.errors import InvalidInput
from totesys_etl.ingest.watermark import MAX_CLOCK_STEP, Snapshot, Watermark, next_run_id, previous_watermark
from totesys_etl.ingest.xids import XidSet
from totesys_etl.logs import StageLog


def test_snapshot_text_round_trips_and_rejects_what_postgresql_would():
    snapshot = Snapshot.parse("100:120:101,105")
    assert snapshot == Snapshot(100, 120, (101, 105)) and str(snapshot) == "100:120:101,105"
    assert str(Snapshot.parse("7:7:")) == "7:7:"
    for text in ("", "1:2", "a:b:", "5:3:", "3:10:11", "3:10:2", "3:10:5,4", "1:2:3;DROP", None, 7):
        with pytest.raises(ValueError):
            Snapshot.parse(text)


def test_id_sets_do_the_few_set_operations_a_run_needs_and_read_postgresqls_text():
    a = XidSet.parse("{[10,20),[30,40)}")
    assert str(a) == "{[10,20),[30,40)}" and a.count() == 20 and 15 in a and 25 not in a
    assert str(a - XidSet([(12, 14), (18, 35)])) == "{[10,12),[14,18),[35,40)}"
    assert str(a & XidSet.span(15, 32)) == "{[15,20),[30,32)}"
    assert str(a | XidSet([(20, 30)])) == "{[10,40)}" and not XidSet() and XidSet.parse("{}") == XidSet()
    with pytest.raises(ValueError):
        XidSet.parse("{[1,2)};DROP")


def _manifest(**changes) -> dict:
    return {"run_id": "20261124T071248780573Z", "stage": "ingest", "files": {}, "rows": {},
            "snapshot": "1000:1003:1001", "cutoff": "2026-11-24 07:12:48.780573", **changes}


def test_id_set_operations_agree_with_sets_of_ids_whatever_their_sizes():
    """The short cuts (one side with few ranges) and the general sweep give the same sets."""
    rng = random.Random(34)

    def random_set(ranges: int) -> XidSet:
        bounds = sorted(rng.sample(range(0, 6 * ranges + 10), 2 * ranges))
        return XidSet(zip(bounds[0::2], bounds[1::2]))

    def ids(xids: XidSet) -> set[int]:
        return {x for lo, hi in xids.ranges for x in range(lo, hi)}

    for _ in range(300):
        a, b = random_set(rng.choice([0, 1, 3, 70, 200])), random_set(rng.choice([0, 1, 3, 70, 200]))
        if rng.random() < 0.3:  # mostly the same ranges (the ids in progress at two runs)
            b = (a - random_set(rng.choice([1, 3]))) | random_set(rng.choice([1, 3]))
        for result, expected in ((a | b, ids(a) | ids(b)), (a - b, ids(a) - ids(b)), (a & b, ids(a) & ids(b))):
            assert ids(result) == expected and result == XidSet(result.ranges)  # canonical: sorted, merged
            assert XidSet.parse(str(result)) == result
        probe = rng.randrange(0, 1300)
        assert (probe in a) == (probe in ids(a))
    assert XidSet.of_ids([3, 4, 4, 5, 9]) == XidSet([(3, 6), (9, 10)])
    assert XidSet.parse("{[5,7),[1,3),[3,4)}") == XidSet([(1, 4), (5, 7)])  # valid, not canonical: merged


def test_a_watermark_comes_only_from_a_complete_ingest_manifest():
    mark = Watermark.from_manifest(_manifest())
    assert mark == Watermark("20261124T071248780573Z", Snapshot(1000, 1003, (1001,)),
                             datetime(2026, 11, 24, 7, 12, 48, 780573))
    for bad in (_manifest(stage="process"), _manifest(cutoff="yesterday"), _manifest(snapshot="1:x:"),
                _manifest(cutoff=None), {k: v for k, v in _manifest().items() if k != "snapshot"}):
        with pytest.raises(InvalidInput):
            Watermark.from_manifest(bad)


def test_the_fx_watermark_is_a_date_or_absent():
    assert Watermark.from_manifest(_manifest()).fx is None
    assert Watermark.from_manifest(_manifest(fx="2025-06-13")).fx == "2025-06-13"
    for bad in ("2025-6-13", "20250613", "2025-W24-5", "yesterday", 20250613, ["2025-06-13"]):
        with pytest.raises(InvalidInput):
            Watermark.from_manifest(_manifest(fx=bad))


def test_the_newest_readable_manifest_is_found_from_recent_runs_backwards(buckets):
    bucket = buckets[0]
    log = StageLog("ingest")
    assert previous_watermark(bucket, log) is None
    older, newer = "20010203T040506000007Z", "20261124T071748780573Z"
    now = datetime(2026, 11, 24, 7, 30, tzinfo=timezone.utc)
    manifests.write(bucket, _manifest(run_id=older))
    assert previous_watermark(bucket, log, now=now).run_id == older  # the window widens back to 2001
    manifests.write(bucket, _manifest(run_id=newer))
    assert previous_watermark(bucket, log, now=now).run_id == newer
    s3.put_create_only(bucket, lake.manifest_key("20261124T072000000000Z"), b"{corrupt")
    assert previous_watermark(bucket, log, now=now).run_id == newer
    # A clock far behind or ahead of the lake costs listings, never the answer.
    assert previous_watermark(bucket, log, now=now.replace(year=2040)).run_id == newer
    assert previous_watermark(bucket, log, now=now.replace(year=2001)).run_id == newer


def test_a_first_run_lists_twice_and_a_stray_object_still_widens_the_windows(buckets):
    """A first run (nothing under `_runs/`) once listed six ever wider windows back to 2000, one
    request each; a listing of one key now says there is nothing further back. Anything at all under
    `_runs/`, even a key that is no run's, keeps the widening, so no older manifest is ever missed."""
    bucket, log, lists = buckets[0], StageLog("ingest"), []

    def count(**_):
        lists.append(1)
    client = s3.client()
    client.meta.events.register("before-send.s3.ListObjectsV2", count)
    try:
        assert previous_watermark(bucket, log) is None
        assert len(lists) == 2
        s3.put_create_only(bucket, f"{lake.RUNS_PREFIX}notes.txt", b"not a manifest")
        lists.clear()
        assert previous_watermark(bucket, log) is None
        assert len(lists) == 8  # the first window, the one key, then every wider window back to 2000
        older = "20010203T040506000007Z"
        manifests.write(bucket, _manifest(run_id=older))
        assert previous_watermark(bucket, log).run_id == older
    finally:
        client.meta.events.unregister("before-send.s3.ListObjectsV2", count)


def test_a_run_id_follows_every_totesys_run_of_either_mode_within_a_day_of_the_clock(buckets):
    """ADR 0002: the loader keeps the version of the latest run id, so a run named by a clock that
    stepped back is named one microsecond after the newest totesys run instead, whichever mode wrote
    it. Courier runs (another source, another clock), manifests that do not parse (nested too deep to
    decode, over manifest.MAX_BYTES) and keys more than MAX_CLOCK_STEP ahead of the clock (stray or
    forged) move nothing. One listing, from the clock on."""
    bucket, log, lists = buckets[0], StageLog("ingest"), []
    now = datetime(2026, 11, 24, 7, 30, tzinfo=timezone.utc)

    def at(**delta) -> str:
        return lake.run_id_at(now + timedelta(**delta))

    def after(run_id: str) -> str:
        return lake.run_id_at(lake.run_time(run_id) + timedelta(microseconds=1))

    def count(**_):
        lists.append(1)
    client = s3.client()
    client.meta.events.register("before-send.s3.ListObjectsV2", count)
    try:
        assert next_run_id(bucket, now, log) == lake.run_id_at(now)  # an empty lake
        manifests.write(bucket, _manifest(run_id=at(minutes=-5)))
        assert next_run_id(bucket, now, log) == lake.run_id_at(now)  # runs before the clock: the clock
        polled = at(minutes=30)
        manifests.write(bucket, _manifest(run_id=polled))
        assert next_run_id(bucket, now, log) == after(polled)
        from_cdc = at(minutes=40)
        manifests.write(bucket, {"run_id": from_cdc, "stage": "ingest", "files": {}, "rows": {},
                                 "source_mode": "cdc", "read": "snapshot", "lsn_from": "0/10", "lsn_to": "0/10"})
        assert next_run_id(bucket, now, log) == after(from_cdc)
        manifests.write(bucket, manifests.courier_manifest(at(minutes=50), {"bucket": "b", "key": "k", "etag": "e"},
                                                           {}, {"delivery_event": 0}, []))
        s3.put_create_only(bucket, lake.manifest_key(at(minutes=55)), b"{not json")
        s3.put_create_only(bucket, lake.manifest_key(at(minutes=56)), b"[" * 50_000)  # RecursionError in json
        s3.put_create_only(bucket, lake.manifest_key(at(minutes=57)),  # valid, but over the cap: never read
                           s3.json_body(_manifest(run_id=at(minutes=57))).ljust(manifests.MAX_BYTES + 1))
        manifests.write(bucket, _manifest(run_id=lake.run_id_at(now + MAX_CLOCK_STEP + timedelta(seconds=1))))
        lists.clear()
        assert next_run_id(bucket, now, log) == after(from_cdc)
        assert len(lists) == 1
        manifests.write(bucket, _manifest(run_id=at(hours=23)))  # a day's step back, less an hour: followed
        assert next_run_id(bucket, now, log) == after(at(hours=23))
    finally:
        client.meta.events.unregister("before-send.s3.ListObjectsV2", count)
