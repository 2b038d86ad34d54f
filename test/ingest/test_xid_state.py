"""A run's large id sets beside its manifest (ingest/xid_state.py): exact round trips, a manifest that
stays small, and a missing or altered state object that stops the run instead of being guessed."""
from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
import zlib

import pytest

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.errors import InvalidInput, LakeUnavailable
from totesys_etl.ingest import xid_state
from totesys_etl.ingest.watermark import previous_watermark
from totesys_etl.ingest.xids import XidSet
from totesys_etl.logs import StageLog

RUN = "20261207T030000000000Z"
OLDER = "20261207T025500000000Z"


def _interleaved(first: int, count: int) -> XidSet:
    """Every other id from `first` on: the fragmentation of savepoints interleaved with commits."""
    return XidSet((first + 2 * i, first + 2 * i + 1) for i in range(count))


def test_sets_round_trip_exactly_and_compactly():
    rng = random.Random(34)
    ids = sorted(rng.sample(range(2 ** 40, 2 ** 40 + 400_000), 100_000))
    sets = [XidSet(), _interleaved(3, 100_000), XidSet((x, x + 1) for x in ids), XidSet.span(2 ** 63 - 9, 2 ** 63 - 1)]
    body = xid_state.encode(sets)
    assert xid_state.decode(body) == (sets, [])
    # 100,000 regular interleavings are a few kB; 100,000 random ids about 2 bytes a bound.
    assert len(xid_state.encode(sets[1:2])) < 4_000
    assert len(xid_state.encode(sets[2:3])) < 500_000
    assert xid_state.decode(xid_state.encode([])) == ([], [])


def test_a_state_object_written_before_claims_were_kept_there_still_reads():
    """TXIDS1 (sets only, no count in front), as runs before this wrote it: a lake keeps such objects."""
    numbers = [2, 1, 2, 1000, 1, 5, 3, 2, 4]  # two sets: [1000,1001) and [5,8),[10,14)
    body = b"TXIDS1\n" + zlib.compress(b"".join(n.to_bytes(8, "little") for n in numbers))
    assert xid_state.decode(body) == ([XidSet.span(1000, 1001), XidSet([(5, 8), (10, 14)])], [])


@pytest.mark.parametrize("body", [
    b"", b"{}", b"TXIDS1\n", b"TXIDS1\nnot zlib", xid_state.encode([XidSet.span(1, 5)])[:-3],
    xid_state.encode([XidSet.span(1, 5)]) + b"trailing",
    b"TXIDS1\n" + zlib.compress((1).to_bytes(8, "little") + (1).to_bytes(8, "little") + (5).to_bytes(8, "little")
                                + (0).to_bytes(8, "little")),  # an empty range
    b"TXIDS1\n" + zlib.compress((1).to_bytes(8, "little") + (2).to_bytes(8, "little") + b"\x05" + bytes(7)),
    xid_state.encode([XidSet.span(1, 5)], [[(1, "2026-12-07 03:00:00.000000")]]),  # a claim naming no set
    xid_state.encode([XidSet.span(1, 5)], [[(0, "2026-12-07 03:00:00.000000")]])[:-4],
])
def test_anything_but_an_encoded_state_is_refused(body):
    with pytest.raises(ValueError):
        xid_state.decode(body)


def test_a_state_that_inflates_past_its_limit_is_refused(monkeypatch):
    monkeypatch.setattr(xid_state, "_MAX_DECODED", 1 << 20)
    with pytest.raises(ValueError, match="oversized"):
        xid_state.decode(b"TXIDS1\n" + zlib.compress(bytes(2 << 20)))


def _fields(in_progress: XidSet, xmin: int, xmax: int) -> dict:
    return {"snapshot": f"{xmin}:{xmax}:", "cutoff": "2026-12-07 03:00:00.000000", "read": "full",
            "seen": str(XidSet.span(xmin + 1, xmax) - in_progress), "in_progress": str(in_progress),
            "unread": [{"xids": str(XidSet.span(xmin, xmax) - in_progress),
                        "stamped_up_to": "2026-12-06 13:00:00.000000"}],
            "rescanned_at": OLDER, "source_identity": None}


def test_small_sets_stay_inline_as_before(buckets):
    fields = _fields(XidSet.span(1000, 1001), 1000, 1010)
    assert xid_state.spill(buckets[0], RUN, json.loads(json.dumps(fields))) == fields
    assert not s3.exists(buckets[0], xid_state.state_key(RUN))


def test_large_sets_go_to_a_create_only_state_object_and_come_back_exact(buckets):
    bucket, log = buckets[0], StageLog("ingest")
    running = _interleaved(5_000_001, 100_000) | XidSet.span(5_000_000, 5_000_001)
    fields = _fields(running, 5_000_000, 5_200_002)
    fields["stopped"] = {"staff": {"missing": ["email_address"], "since": {
        "run_id": OLDER, "snapshot": "5000000:5000002:", "cutoff": "2026-12-07 02:55:00.000000",
        "seen": fields["seen"], "in_progress": fields["in_progress"], "unread": [], "rescanned_at": None}}}
    expected = json.loads(json.dumps(fields))
    manifest = manifests.ingest_manifest(RUN, OLDER, xid_state.spill(bucket, RUN, fields), {}, {})
    body = s3.json_body(manifest)
    assert len(body) < 2_000, len(body)  # the sets, all 2 x 100,000 ranges of them, are in the state object
    assert manifest["seen"] == {"state": 0} and manifest["stopped"]["staff"]["since"]["in_progress"] == {"state": 1}
    assert manifest[xid_state.FIELD]["bytes"] < 8_000
    assert _as_text(xid_state.inline(bucket, manifest)) == {**manifests.ingest_manifest(RUN, OLDER, expected, {}, {}),
                                                            xid_state.FIELD: manifest[xid_state.FIELD]}
    manifests.write(bucket, manifest)
    mark = previous_watermark(bucket, log)
    assert (mark.run_id, mark.in_progress, XidSet.parse(mark.seen)) == (RUN, running, XidSet.parse(expected["seen"]))
    assert mark.stopped[0].since.in_progress == running
    # A rerun of the same run writes the same bytes (create-only, same content: fine).
    assert xid_state.spill(bucket, RUN, json.loads(json.dumps(expected)))[xid_state.FIELD] == manifest[xid_state.FIELD]


def _as_text(document):
    """The manifest with each set `inline` gave back (an XidSet, never turned into text there) as its text."""
    if isinstance(document, dict):
        return {k: _as_text(v) for k, v in document.items()}
    if isinstance(document, list):
        return [_as_text(v) for v in document]
    return str(document) if isinstance(document, XidSet) else document


def _spilled_manifest(bucket: str) -> dict:
    manifest = manifests.ingest_manifest(RUN, OLDER, xid_state.spill(
        bucket, RUN, _fields(_interleaved(1001, 10_000), 1000, 30_000)), {}, {})
    manifests.write(bucket, manifest)
    manifests.write(bucket, manifests.ingest_manifest(OLDER, None, _fields(XidSet(), 900, 1000), {}, {}))
    return manifest


def test_a_missing_state_object_stops_the_run_with_one_line(buckets):
    bucket = buckets[0]
    _spilled_manifest(bucket)
    s3.client().delete_object(Bucket=bucket, Key=xid_state.state_key(RUN))
    with pytest.raises(LakeUnavailable) as stopped:
        previous_watermark(bucket, StageLog("ingest"))  # never the older run instead: that would guess
    assert "is missing" in str(stopped.value) and xid_state.state_key(RUN) in str(stopped.value)
    assert "\n" not in str(stopped.value)


def test_an_altered_state_object_stops_the_run_with_one_line(buckets):
    bucket = buckets[0]
    manifest = _spilled_manifest(bucket)
    altered = xid_state.encode([XidSet.span(1000, 1001)] * 3)
    s3.client().put_object(Bucket=bucket, Key=xid_state.state_key(RUN), Body=altered)
    with pytest.raises(xid_state.StateUnreadable, match="checksum"):
        previous_watermark(bucket, StageLog("ingest"))
    # Even with a matching checksum, bytes that do not decode are refused, not guessed.
    s3.client().put_object(Bucket=bucket, Key=xid_state.state_key(RUN), Body=b"TXIDS1\nnonsense")
    digest = hashlib.sha256(b"TXIDS1\nnonsense").hexdigest()
    forged = {**manifest, xid_state.FIELD: {**manifest[xid_state.FIELD], "bytes": 15, "sha256": digest}}
    with pytest.raises(xid_state.StateUnreadable, match="does not decode"):
        xid_state.inline(bucket, forged)


def test_a_state_object_larger_than_its_manifest_says_is_refused_unread_in_one_line(buckets):
    """A huge object where the state belongs costs one request, never memory: it is refused by its size
    before its body is read (it was read whole first, then found not to match)."""
    bucket = buckets[0]
    manifest = _spilled_manifest(bucket)
    s3.client().put_object(Bucket=bucket, Key=xid_state.state_key(RUN), Body=bytes(8 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(xid_state.StateUnreadable) as stopped:
            previous_watermark(bucket, StageLog("ingest"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak
    expected = f"is 8,388,608 bytes, not the {manifest[xid_state.FIELD]['bytes']:,} its manifest names"
    assert expected in str(stopped.value) and "\n" not in str(stopped.value)


def test_a_reference_to_a_state_larger_than_any_is_a_corrupt_manifest_and_skipped_unread(buckets, monkeypatch):
    """A manifest naming a state object over xid_state.MAX_BYTES (no run writes one) is corrupt: skipped
    for the run before it, as a malformed reference is, and the object is never read."""
    monkeypatch.setattr(xid_state, "MAX_BYTES", 1 << 20)
    bucket = buckets[0]
    manifest = _spilled_manifest(bucket)
    body = bytes(8 << 20)
    s3.client().put_object(Bucket=bucket, Key=xid_state.state_key(RUN), Body=body)
    s3.client().put_object(Bucket=bucket, Key=lake.manifest_key(RUN), Body=s3.json_body(
        {**manifest, xid_state.FIELD: {**manifest[xid_state.FIELD], "bytes": len(body),
                                       "sha256": hashlib.sha256(body).hexdigest()}}))
    with pytest.raises(InvalidInput, match="more than a state object may be"):
        xid_state.inline(bucket, manifests.read(bucket, RUN))
    assert previous_watermark(bucket, StageLog("ingest")).run_id == OLDER


def test_a_manifest_whose_reference_is_malformed_is_a_corrupt_manifest_and_skipped(buckets):
    bucket = buckets[0]
    manifest = _spilled_manifest(bucket)
    s3.client().put_object(Bucket=bucket, Key=lake.manifest_key(RUN), Body=s3.json_body(
        {**manifest, xid_state.FIELD: {**manifest[xid_state.FIELD], "key": "_state/ingest_xids/../x.bin"}}))
    assert previous_watermark(bucket, StageLog("ingest")).run_id == OLDER


def test_eleven_stopped_tables_with_200_claims_each_keep_the_manifest_under_64_kb(buckets):
    """Contract §2: a manifest stays under 64 KB whatever happens. Each table stopped for a missing
    column (source_schema_changed, poll mode) keeps the watermark it resumes from, claims and all (up
    to MAX_UNREAD of them): eleven such tables carried 2,200 claims inline, about 160 KB. They go to
    the state object with the sets, and come back the same."""
    from totesys_etl.ingest.extract import MAX_UNREAD
    from totesys_etl.ingest.watermark import Stopped, Unread, Watermark
    from totesys_etl.schema import SOURCE_TABLES

    bucket = buckets[0]
    since = Watermark.from_fields(_fields(XidSet.span(1000, 1001), 1000, 1010), OLDER)
    claims = tuple(Unread(str(XidSet.span(2000 + 10 * i, 2005 + 10 * i)), since.cutoff) for i in range(MAX_UNREAD))
    since = Watermark(OLDER, since.snapshot, since.cutoff, since.seen, claims, OLDER, running=since.running)
    fields = _fields(XidSet.span(5000, 5001), 5000, 5010)
    fields["stopped"] = {t.name: Stopped(t.name, ("last_updated",), since).to_json() for t in SOURCE_TABLES}
    manifest = manifests.ingest_manifest(RUN, OLDER, xid_state.spill(bucket, RUN, fields), {}, {})
    manifests.write(bucket, manifest)
    assert len(SOURCE_TABLES) == 11 and len(s3.json_body(manifest)) < 64 * 1024, len(s3.json_body(manifest))
    mark = previous_watermark(bucket, StageLog("ingest"))
    assert [s.table for s in mark.stopped] == sorted(t.name for t in SOURCE_TABLES)
    assert all(s.since.unread == claims and s.since.run_id == OLDER for s in mark.stopped)
