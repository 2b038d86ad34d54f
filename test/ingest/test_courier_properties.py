"""Property-based tests of the courier reader (issue 39, contract §9 "Bounded work"): whatever bytes a
courier drops, reading them ends in events (some perhaps held back, each with a reason) or in the
file quarantined whole with a reason. Never another exception, which the ingest would log as a
failure and retry on every run, and never BodyFailed, which is kept for the stream itself failing.

The reader is driven as the ingest drives it (`courier._read`: parse, validate, write the CSV and
the held-back rows), at every chunk size, with the event limit lowered so that "huge" is cheap.
The example count is bounded (PROPERTY) so the suite runs within `make run-checks`;
TOTESYS_HYPOTHESIS_EXAMPLES raises it for a longer hunt.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from totesys_etl.ingest import courier, courier_files
from totesys_etl.ingest.courier_files import Unreadable

PROPERTY = settings(max_examples=int(os.environ.get("TOTESYS_HYPOTHESIS_EXAMPLES", "150")), deadline=None,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: The event limit while these run: a "huge" string is a few kB, not megabytes.
SMALL_EVENT_BYTES = 2048

chunk_sizes = st.one_of(st.integers(1, 8), st.integers(9, 300), st.just(1 << 16))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
events = st.fixed_dictionaries({
    "event_id": st.text(min_size=1, max_size=12), "sales_order_id": st.integers(-5, 1 << 40),
    "status": st.sampled_from(["collected", "in_transit", "delivered", "failed", "lost"]),
    "at": st.sampled_from(["2024-03-05T14:22:09.512000Z", "2024-02-30T10:00:00Z", "yesterday"]),
    "city": st.text(max_size=10), "courier": st.text(max_size=10)})


@st.composite
def nested(draw) -> bytes:
    """Brackets and objects nested deeper than any decoder allows, closed or not, in either format."""
    depth = draw(st.integers(500, 20_000))
    opener = draw(st.sampled_from([b"[", b'{"a": ', b'[{"b": ']))
    closer = {b"[": b"]", b'{"a": ': b"}", b'[{"b": ': b"}]"}[opener]
    body = opener * depth + b"1" + (closer * depth if draw(st.booleans()) else b"")
    return draw(st.sampled_from([b"[" + body + b"]", body + b"\n" + b'{"a": 1}\n', b'{"x": ' + body + b"}\n"]))


@st.composite
def huge(draw) -> bytes:
    """An event whose string is around the event limit, as an array element or a line."""
    size = draw(st.integers(SMALL_EVENT_BYTES - 64, SMALL_EVENT_BYTES * 3))
    text = json.dumps({"event_id": "e", "t": "x" * size}).encode()
    return b"[" + text + b"]" if draw(st.booleans()) else text + b"\n" + text + b"\n"


@st.composite
def documents(draw) -> bytes:
    """Random JSON documents, mostly of events, as an array or JSON Lines."""
    values = draw(st.lists(st.one_of(events, json_values), max_size=8))
    if draw(st.booleans()):
        return json.dumps(values, ensure_ascii=draw(st.booleans())).encode()
    return b"".join(json.dumps(v).encode() + draw(st.sampled_from([b"\n", b"\r\n"])) for v in values)


@st.composite
def truncated_gzip(draw) -> bytes:
    data = gzip.compress(draw(documents()))
    return data[:draw(st.integers(0, len(data)))]


@st.composite
def files(draw) -> bytes:
    data = draw(st.one_of(st.binary(max_size=600), documents(), truncated_gzip(), nested(), huge(),
                          documents().map(lambda d: d[:len(d) // 2])))
    if draw(st.booleans()):
        data = gzip.compress(data) if draw(st.booleans()) else zlib.compress(data)  # zlib: not gzip, not JSON
    return data


def read(data: bytes) -> tuple[int, list[str]] | str:
    """(events read, held-back reasons), or the reason the file is unreadable."""
    with tempfile.TemporaryDirectory() as folder:
        held = courier._HeldEvents(os.path.join(folder, "held.csv"))
        try:
            rows = courier._read(io.BytesIO(data), os.path.join(folder, "events.csv"), held)
        except Unreadable as e:
            return str(e)
        finally:
            held.close()
        return rows, list(held.reasons)


@PROPERTY
@given(data=files(), chunk=chunk_sizes)
def test_any_file_reads_as_events_or_one_reason_never_a_failure(data, chunk):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(courier_files, "CHUNK_BYTES", chunk)
        patch.setattr(courier_files, "MAX_EVENT_BYTES", SMALL_EVENT_BYTES)
        outcome = read(data)  # any exception but Unreadable fails the test: that would be retried for ever
    if isinstance(outcome, str):
        assert outcome.strip(), "an unreadable file needs a reason"
    else:
        rows, reasons = outcome
        assert rows >= 0 and all(r.strip() for r in reasons)


@PROPERTY
@given(depth=st.integers(2_000, 30_000), chunk=chunk_sizes, lines=st.booleans())
def test_deep_nesting_is_named_as_such(depth, chunk, lines):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(courier_files, "CHUNK_BYTES", chunk)
        outcome = read(b'{"a": ' + b"[" * depth + b"\n" if lines else b"[" * depth)
    assert isinstance(outcome, str) and "nested too deep" in outcome, outcome


@PROPERTY
@given(good=st.lists(events, min_size=1, max_size=5), size=st.integers(SMALL_EVENT_BYTES + 1, 20_000),
       chunk=chunk_sizes)
def test_a_huge_line_is_held_back_alone_with_its_size(good, size, chunk):
    long = json.dumps({"event_id": "e", "t": "x" * size}).encode()
    data = b"".join(json.dumps(e).encode() + b"\n" for e in good) + long + b"\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(courier_files, "CHUNK_BYTES", chunk)
        patch.setattr(courier_files, "MAX_EVENT_BYTES", SMALL_EVENT_BYTES)
        outcome = read(data)
    assert not isinstance(outcome, str), outcome
    assert [r for r in outcome[1] if r.startswith(f"the line is {len(long):,} bytes, longer than")], outcome
