from datetime import datetime, timedelta, timezone

import pytest

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.errors import ConfigurationError

RUN = "20261124T071248780573Z"


def test_run_ids_sort_in_time_order_and_date_the_keys():
    early = lake.run_id_at(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc))
    late = lake.run_id_at(datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone.utc))
    assert early == "20260102T030405000006Z" and early < late
    assert lake.table_key("staff", early, "csv") == "staff/year=2026/month=01/day=02/staff_20260102T030405000006Z.csv"
    assert lake.newest_first(late) < lake.newest_first(early)


@pytest.mark.parametrize("key", ["_runs/../x.json", f"_runs/{RUN}.json.bak", f"x/_runs/{RUN}.json",
                                 "_runs/2026'; DROP TABLE x;--.json", f"_runs/{RUN}"])
def test_only_exact_manifest_keys_name_a_run(key):
    assert lake.run_id_of_manifest(key) is None


def test_runs_after_lists_manifests_in_order(buckets):
    bucket = buckets[0]
    s3.put_create_only(bucket, lake.manifest_key(RUN), b"{}")
    assert lake.manifest_exists(bucket, RUN)
    assert lake.runs_after(bucket, None) == [RUN]
    assert lake.runs_after(bucket, RUN) == []


def test_marks_return_the_highest(buckets):
    bucket = buckets[1]
    assert lake.read_mark(bucket, "_state/m/") is None
    for run in ("20260101T000000000001Z", "20260101T000000000003Z", "20260101T000000000002Z"):
        lake.write_mark(bucket, "_state/m/", run)
    assert lake.read_mark(bucket, "_state/m/") == "20260101T000000000003Z"


def test_a_stray_key_under_the_mark_prefix_is_skipped(buckets):
    bucket = buckets[1]
    lake.write_mark(bucket, "_state/m/", "20260101T000000000001Z")
    s3.put_create_only(bucket, "_state/m/0stray", b"x")  # sorts first
    assert lake.read_mark(bucket, "_state/m/") == "20260101T000000000001Z"


def test_runs_after_ignores_other_keys(buckets):
    bucket = buckets[0]
    for key in (f"_runs/{RUN}.json", "_runs/../evil.json", "_runs/notes.txt"):
        s3.put_create_only(bucket, key, b"{}")
    assert lake.runs_after(bucket, None) == [RUN]


def test_advance_mark_stops_at_the_first_pending_run():
    runs = ["a1", "a2", "a3"]
    assert lake.advance_mark(runs, {"a1", "a3"}) == "a1"
    assert lake.advance_mark(runs, {"a2"}) is None
    assert lake.advance_mark(runs, set(runs)) == "a3"


def test_settled_keeps_only_run_ids_old_enough_for_a_mark_to_pass():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    old, recent, future = (lake.run_id_at(now - lake.SETTLE - timedelta(seconds=1)),
                           lake.run_id_at(now - timedelta(minutes=1)), "20990101T000000000000Z")
    assert lake.settled([old, recent, future], now) == [old]


def test_settled_follows_the_settle_setting(monkeypatch):
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    ten_seconds_ago = lake.run_id_at(now - timedelta(seconds=10))
    assert lake.settled([ten_seconds_ago], now) == []
    monkeypatch.setenv(lake.SETTLE_VARIABLE, "5")
    assert lake.settled([ten_seconds_ago], now) == [ten_seconds_ago]


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_settle_setting_is_a_configuration_error(monkeypatch, value):
    monkeypatch.setenv(lake.SETTLE_VARIABLE, value)
    with pytest.raises(ConfigurationError, match="TOTESYS_SETTLE_SECONDS"):
        lake.settle_period()
