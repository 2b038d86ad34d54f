"""Reading courier files (ingest/courier_files.py): every format, every chunk boundary, bounded memory."""
from __future__ import annotations

import gzip
import io
import json
import socket
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import urllib3

from totesys_etl.ingest import courier_files
from totesys_etl.ingest.courier_files import Unreadable, items

EVENTS = [{"event_id": f"e{i}", "n": 10 ** 12 + i, "text": 'a],["b\\' + "é" * (i % 3), "x": [1, {"y": None}],
           "f": 1.5} for i in range(12)]


def values(data: bytes) -> list:
    return [(i.number, i.value, i.error) for i in items(io.BytesIO(data))]


def unreadable(data: bytes) -> str:
    with pytest.raises(Unreadable) as caught:
        values(data)
    return str(caught.value)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 16])
def test_every_format_reads_the_same_whatever_the_chunk_boundaries(chunk, monkeypatch):
    monkeypatch.setattr(courier_files, "CHUNK_BYTES", chunk)
    array = json.dumps(EVENTS, ensure_ascii=False, indent=2).encode()
    lines = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\r\n" for e in EVENTS)
    want = [(n, e, None) for n, e in enumerate(EVENTS, start=1)]
    assert values(array) == want
    assert values(b"\xef\xbb\xbf \n" + array + b"\n\n") == want
    assert values(lines) == want
    assert values(gzip.compress(array)) == want and values(gzip.compress(lines)) == want
    half = len(lines) // 2
    assert values(gzip.compress(lines[:half]) + gzip.compress(lines[half:]) + b"\x00" * 8) == want
    assert values(b"[ 1 ,22 , 333,4444]") == [(1, 1, None), (2, 22, None), (3, 333, None), (4, 4444, None)]
    assert values(b"[]") == [] and values(b" [ ] ") == []


def test_a_bad_line_is_one_bad_item_and_the_others_read():
    data = b'{"a": 1}\n\n{"a": 2,\n\xff\xfe\n  {"a": 3}  \n'
    got = values(data)
    assert [(n, v) for n, v, _ in got] == [(1, {"a": 1}), (3, None), (4, None), (5, {"a": 3})]
    assert got[1][2].startswith("not JSON") and got[2][2] == "the line is not UTF-8"


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"), (b"  \n\t", "empty"), (b"hello", "neither '[' nor '{'"), (b"PK\x03\x04", "neither"),
    (b"[1, 2", "without ']'"), (b"[1, 2,", "without ']'"), (b"[1,,2]", "not JSON at element 2"),
    (b"[1 2]", "expected ',' or ']'"), (b"[1] [2]", "after the end"), (b"[1, tru]", "not JSON at element 2"),
    (b"{nope\n{nor this\n", "no line of the file could be read (line 1: not JSON"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
    (b"[\"\xff\"]", "not UTF-8"),
])
def test_a_file_that_is_not_json_is_unreadable_with_its_reason(data, reason):
    assert reason in unreadable(data)


def test_a_truncated_gzip_file_is_unreadable():
    assert "truncated" in unreadable(gzip.compress(json.dumps(EVENTS).encode())[:-20])


def test_an_event_longer_than_the_limit_makes_an_array_unreadable_and_a_line_bad(monkeypatch):
    monkeypatch.setattr(courier_files, "MAX_EVENT_BYTES", 1000)
    monkeypatch.setattr(courier_files, "CHUNK_BYTES", 100)
    long = json.dumps({"t": "x" * 5000}).encode()
    assert "element 1 is longer than the largest event" in unreadable(b"[" + long + b"]")
    got = values(b'{"a": 1}\n' + long + b'\n{"a": 2}\n')
    assert [(n, v) for n, v, _ in got] == [(1, {"a": 1}), (2, None), (3, {"a": 2})]
    assert "the line is 5,009 bytes, longer than the largest event accepted" in got[1][2]


class Generated:
    """A file of `count` events made as it is read: only the reader's own memory is measured."""

    def __init__(self, count: int, lines: bool):
        self.lines, self.count, self.n, self.buffer = lines, count, 0, b"" if lines else b"["

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and self.n < self.count:
            event = json.dumps({"event_id": f"ev-{self.n:09d}", "sales_order_id": self.n, "status": "delivered",
                                "at": "2024-03-05T10:11:12.123456Z", "city": "Leeds", "courier": "DPD"}).encode()
            sep = b"\n" if self.lines else (b"," if self.n + 1 < self.count else b"]")
            self.buffer += event + sep
            self.n += 1
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


@pytest.mark.slow
@pytest.mark.parametrize("lines", [False, True])
def test_memory_stays_bounded_whatever_the_size(lines):
    """~20 MB of events read with a peak of Python allocations that does not grow with the file."""
    peaks = []
    for count in (20_000, 140_000):
        tracemalloc.start()
        read = sum(1 for _ in items(Generated(count, lines)))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert read == count
    assert peaks[1] < 2 * 1024 * 1024 and peaks[1] < peaks[0] * 1.5, peaks


# Issue 39: hostile content is the file's fault, named, and bounded; only the stream failing is an outage.

class Spaces:
    """`head`, then `size` bytes of `fill`, then `tail`, made as they are read (nothing held whole)."""

    def __init__(self, head: bytes, size: int, tail: bytes = b"", fill: bytes = b" "):
        self.head, self.left, self.tail, self.fill = head, size, tail, fill
        self.block = fill * (1 << 16)

    def read(self, size: int) -> bytes:
        if self.head:
            out, self.head = self.head[:size], self.head[size:]
            return out
        if self.left:
            n = min(size, self.left, len(self.block))
            self.left -= n
            return self.block[:n]
        out, self.tail = self.tail[:size], self.tail[size:]
        return out


def test_deep_nesting_makes_an_array_unreadable_with_its_reason():
    reason = unreadable(b"[" * 200_000)
    assert "nested" in reason and "element 1" in reason, reason
    assert "nested" in unreadable(b'[{"a": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}]")


def test_a_deeply_nested_line_is_one_bad_event_and_the_others_read():
    got = values(b'{"a": 1}\n' + b'{"a": ' + b"[" * 200_000 + b'\n{"a": 2}\n')
    assert [(n, v) for n, v, _ in got] == [(1, {"a": 1}), (2, None), (3, {"a": 2})]
    assert "nested" in got[1][2], got[1][2]
    assert "nested" in unreadable(b"[" * 200_000 + b"\n" + b"{" * 5000 + b"\n")  # no line reads: the file


def test_an_oversize_line_names_its_size_not_a_false_reason():
    """A JSON Lines file whose one event carries a 200 MB string: its reason says how long it is."""
    size = 200 * 1000 * 1000
    with pytest.raises(Unreadable) as caught:
        list(items(Spaces(b'{"event_id": "e1", "t": "', size, b'"}\n', fill=b"x")))
    reason = str(caught.value)
    assert "not JSON" not in reason and "200,000,027 bytes" in reason and "1 MiB" in reason, reason
    got = values(b'{"a": 1}\n{"t": "' + b"x" * (2 << 20) + b'"}\n')
    assert got[1][2] == "the line is 2,097,161 bytes, longer than the largest event accepted (1 MiB)"


def test_more_than_the_bytes_limit_decompressed_is_unreadable(monkeypatch):
    monkeypatch.setenv("TOTESYS_LANDING_MAX_BYTES", "100000")
    data = gzip.compress(json.dumps([{"event_id": f"e{i}"} for i in range(20_000)]).encode())
    reason = unreadable(data)
    assert "more than 100,000 bytes" in reason and "TOTESYS_LANDING_MAX_BYTES" in reason, reason
    assert "more than 100,000 bytes" in unreadable(b"[" + b" " * 200_000 + b"]")  # plain files too
    assert len(values(json.dumps([1] * 1000).encode())) == 1000  # under it: read


@pytest.mark.slow  # ~10 s: a real gigabyte is decompressed
def test_a_decompression_bomb_is_stopped_within_the_first_gigabyte():
    """The issue's bomb: ~3 MB of gzip holding 3 GB of whitespace inside a JSON array. It is stopped
    by the ratio rule after at most 1 GiB decompressed, in seconds (it took 237 s before)."""
    member = gzip.compress(b" " * (16 << 20), 9)
    bomb = gzip.compress(b'[{"event_id": "e1"},', 9) + member * 192 + gzip.compress(b"]")
    assert len(bomb) < 4 << 20
    raw = Counting(bomb)
    started = time.thread_time()  # CPU seconds: a wall-clock bound fails on a busy CI machine, not on a defect
    with pytest.raises(Unreadable) as caught:
        list(items(raw))
    seconds = time.thread_time() - started
    reason = str(caught.value)
    assert "200:1" in reason and "decompression bomb" in reason, reason
    decompressed = int(reason.split(" bytes")[0].split()[-1].replace(",", ""))
    assert decompressed <= 1 << 30, reason
    assert raw.read_bytes < len(bomb) / 2  # stopped a third of the way in
    assert seconds < 30, seconds


class Counting(io.BytesIO):
    read_bytes = 0

    def read(self, size=-1):
        out = super().read(size)
        self.read_bytes += len(out)
        return out


class _CutShort(BaseHTTPRequestHandler):
    """Promises a megabyte of a good array and hangs up after a few kilobytes, as a lost connection does."""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"[" + b'{"event_id": "e"},' * 500)
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_stream_that_fails_is_an_outage_never_the_files_fault():
    """The body's own failure (a real connection cut mid-body) is BodyFailed, retried; not Unreadable."""
    server = HTTPServer(("127.0.0.1", 0), _CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response = urllib3.PoolManager().request("GET", f"http://127.0.0.1:{server.server_address[1]}/",
                                                 preload_content=False, retries=False)
        with pytest.raises(courier_files.BodyFailed, match="reading the object failed after"):
            list(items(response))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("text", ["0", "-5", "20GB", "1.5"])
def test_a_malformed_bytes_limit_is_a_configuration_error_never_the_files(text, monkeypatch):
    """A bad setting must not read as a bad file (which would be quarantined and never retried)."""
    from totesys_etl.errors import ConfigurationError

    monkeypatch.setenv("TOTESYS_LANDING_MAX_BYTES", text)
    with pytest.raises(ConfigurationError, match="TOTESYS_LANDING_MAX_BYTES"):
        values(b"[1]")
