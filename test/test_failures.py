"""`failures`: a stage's newest failure kept in the lake for `status`, read back whatever lies there."""
from datetime import datetime, timezone

import pytest

from totesys_etl import failures, lake
from totesys_etl.adapters import s3
from totesys_etl.errors import LakeUnavailable


def test_the_newest_failure_is_read_back(buckets, monkeypatch):
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    failures.record("ingest", LakeUnavailable("s3://x/y: SlowDown"), datetime(2026, 1, 1, tzinfo=timezone.utc))
    failures.record("ingest", LakeUnavailable("s3://x/y: NoSuchBucket"), datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert failures.newest(buckets[0], "ingest") == {"stage": "ingest", "at": "2026-01-02T00:00:00+00:00",
                                                     "error_kind": "lake_unavailable",
                                                     "reason": "s3://x/y: NoSuchBucket"}
    assert failures.newest(buckets[0], "load") is None


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "its failure record is not JSON"),
    (b"[" * 50_000, "its failure record is not JSON"),  # json raises RecursionError here, not a ValueError
    (b"{}".ljust(failures.MAX_BYTES + 1), "its failure record is 65,537 bytes, not read"),
])
def test_a_record_that_is_not_one_is_shown_as_such(buckets, body, reason):
    key = f"{failures.PREFIX}process/{lake.newest_first(lake.run_id_at(datetime.now(timezone.utc)))}.json"
    s3.put_create_only(buckets[1], key, body)
    assert failures.newest(buckets[1], "process") == {"stage": "process", "reason": reason}
