"""Reading a courier file (contract §9) as a stream of events, in bounded memory whatever its size.

A file is a JSON array or JSON Lines, either optionally gzip-compressed (told by its first bytes,
whatever its name). Memory holds one read chunk and one event at a time: an event longer than
MAX_EVENT_BYTES makes the file unreadable rather than the buffer unbounded.

Why not a streaming JSON library: ijson (yajl2_c backend) parsed a 300,000-event, 49 MB array at
833k events/s, this reader at 752k events/s with the same peak RSS (12 MB). ijson's speed comes
from a compiled extension built per Python version and platform, which the Lambda layer (pure,
interpreter-independent bytes: .ci/package.py) cannot carry; its pure-Python backend runs at 29k
events/s. The standard library's `json.JSONDecoder.raw_decode` is C in every CPython, so a chunk
loop around it is as fast as the library and needs nothing shipped.

What is bad, and how much of the file it takes with it:
- a JSON Lines line that is not JSON (or not UTF-8, nested too deep, longer than MAX_EVENT_BYTES)
  is one bad event, its reason naming what was found (the line's size, the nesting depth);
- any syntax error in a JSON array makes the whole file unreadable (there is no way to know where
  the next element starts), as does a file that is neither (`Unreadable`);
- a JSON value that is not a valid event is one bad event (`schema.courier.validate_event`).

Bounded work (contract §9): a file comes from another company, so its content must never cost more
than a bound, nor fail in a way that is retried. At most TOTESYS_LANDING_MAX_BYTES are decompressed
(default 20 GiB), and past the first GiB (RATIO_GRACE_BYTES) the output may be at most MAX_RATIO
times the compressed bytes read: a gzip bomb (deflate reaches ~1,000:1) is stopped at 1 GiB, in
seconds. Content and outage are told apart by *where* an exception comes from, not by its type:
whatever the object's byte stream raises (S3, the network) is `BodyFailed`, an outage the caller
retries; whatever parsing its bytes raises (a syntax error, a RecursionError from deep nesting,
anything else) is the content's, `Unreadable` or one bad event, quarantined and never retried.
The one exception is MemoryError, which says the machine ran short (contract §3: transient).
"""
from __future__ import annotations

import codecs
import json
import os
import re
import zlib
from typing import BinaryIO, Iterator, Mapping, NamedTuple

from totesys_etl.config import whole_number_setting
from totesys_etl.errors import LakeUnavailable, describe

#: Bytes read from the object at a time.
CHUNK_BYTES = 1 << 16
#: The longest event accepted (a real one is ~200 bytes); longer makes the file unreadable.
MAX_EVENT_BYTES = 1 << 20
#: How much of a bad line a held-back event keeps.
MAX_HELD_CHARS = 10_000
#: contract §9: the most bytes one file may decompress to (MAX_BYTES_VARIABLE overrides it).
MAX_BYTES_VARIABLE = "TOTESYS_LANDING_MAX_BYTES"
DEFAULT_MAX_BYTES = 20 << 30
#: contract §9: past this much output, more than MAX_RATIO bytes out per compressed byte in is a bomb.
RATIO_GRACE_BYTES = 1 << 30
MAX_RATIO = 200
#: How much of a too-deep value is scanned to say how deep it goes (a lower bound past it).
DEPTH_SCAN_CHARS = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
_NOT_BLANK = re.compile(r"[^ \t\r\n]")
#: A JSON string, or one bracket: what `_depth` counts.
_DEPTH_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class Unreadable(Exception):
    """The file's content cannot be read (not JSON at all, too deep, too big, a bomb): quarantine it
    whole, with this reason."""


class BodyFailed(LakeUnavailable):
    """Reading the object's bytes failed (S3, the network): an outage, never the file's fault; the
    file is left unmarked and a later pick-up retries it."""


def max_bytes_setting(env: Mapping[str, str] | None = None) -> int:
    """TOTESYS_LANDING_MAX_BYTES: a whole number of bytes >= 1 (default 20 GiB); exit 2 otherwise."""
    return whole_number_setting(os.environ if env is None else env, MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES, "bytes")


class Item(NamedTuple):
    """One element of the file: its number (array index or line, from 1), the parsed value (None
    if it did not parse) and, if it did not, why, with its text."""

    number: int
    value: object
    error: str | None = None
    text: str = ""


def items(raw: BinaryIO, max_bytes: int | None = None) -> Iterator[Item]:
    """The file's elements in order; raises Unreadable (possibly after some items) for a bad file,
    BodyFailed when `raw` itself fails.

    `raw` is anything with `read(n)`, such as an S3 body. A caller that needs all-or-nothing keeps
    what it takes until the end (the ingest writes a local file and publishes it only then).
    `max_bytes` defaults to TOTESYS_LANDING_MAX_BYTES.
    """
    limit = max_bytes_setting() if max_bytes is None else max_bytes
    try:
        yield from _items(raw, limit)
    except (Unreadable, BodyFailed, MemoryError):
        raise
    except Exception as e:  # raised by parsing the content, wherever: the file's fault (module docstring)
        raise Unreadable(f"reading its content failed: {type(e).__name__}: {describe(e)}") from None


def _items(raw: BinaryIO, max_bytes: int) -> Iterator[Item]:
    chunks = _decompressed(_chunks(raw), max_bytes)
    first = _at_least(chunks, lambda data: len(data) >= 4 and bool(_start(data)))  # 4: past a byte-order mark
    head = _start(first)[:1]
    if head == b"[":
        yield from _array(_text(_prepend(first, chunks)))
    elif head == b"{":
        yield from _lines(_prepend(first, chunks))
    elif not head and len(first) <= MAX_EVENT_BYTES:
        raise Unreadable("the file is empty")
    else:
        raise Unreadable("not a JSON array or JSON Lines (the first character is neither '[' nor '{')")


def _mib(size: int) -> str:
    """A limit as a reason says it: "1 MiB" (or its bytes, when not whole MiB)."""
    return f"{size >> 20} MiB" if size and size % (1 << 20) == 0 else f"{size:,} bytes"


def _depth(text: str, start: int) -> int:
    """How deep the brackets from `start` nest within DEPTH_SCAN_CHARS (strings skipped): a lower bound."""
    depth = deepest = 0
    for token in _DEPTH_TOKENS.finditer(text, start, start + DEPTH_SCAN_CHARS):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in "]}":
            depth -= 1
    return deepest


def _decoding_failed(error: Exception, text: str, start: int) -> str:
    """Why decoding the value at `text[start:]` failed, naming what was found."""
    if isinstance(error, RecursionError):
        return f"nested too deep to decode (at least {_depth(text, start):,} levels)"
    if isinstance(error, json.JSONDecodeError):
        return error.msg
    return f"{type(error).__name__}: {describe(error)}"


def _at_least(chunks: Iterator[bytes], enough) -> bytes:
    """The first chunks joined, until `enough(joined)`, the end, or MAX_EVENT_BYTES (memory stays bounded)."""
    first = b""
    for chunk in chunks:
        first += chunk
        if enough(first) or len(first) > MAX_EVENT_BYTES:
            break
    return first


def _start(data: bytes) -> bytes:
    """`data` without leading blanks and byte-order mark."""
    return data.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")


def _chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The object's bytes; anything its stream raises is BodyFailed (an outage: module docstring)."""
    read = 0
    while True:
        try:
            chunk = raw.read(CHUNK_BYTES)
        except Exception as e:
            raise BodyFailed(f"reading the object failed after {read:,} bytes: {describe(e)}") from e
        if not chunk:
            return
        read += len(chunk)
        yield chunk


class _Taken:
    """Counts the compressed bytes taken from `chunks` (the ratio rule's denominator)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.count = chunks, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.count += len(chunk)
            yield chunk


def _too_big(max_bytes: int) -> Unreadable:
    return Unreadable(f"more than {max_bytes:,} bytes decompressed (the limit, {MAX_BYTES_VARIABLE})")


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _decompressed(chunks: Iterator[bytes], max_bytes: int) -> Iterator[bytes]:
    """The bytes as they are, or gunzipped if they start with gzip's magic (members may follow
    one another, as gzip allows; zero bytes after the last are padding), at most `max_bytes` of
    them, and a bomb stopped at RATIO_GRACE_BYTES (module docstring)."""
    taken = _Taken(chunks)
    chunks = iter(taken)
    first = _at_least(chunks, lambda data: len(data) >= len(_GZIP_MAGIC))
    if not first.startswith(_GZIP_MAGIC):
        total = 0
        for chunk in _prepend(first, chunks):
            total += len(chunk)
            if total > max_bytes:
                raise _too_big(max_bytes)
            yield chunk
        return
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    try:
        for data in _prepend(first, chunks):
            while data:
                if inflater.eof:  # a member ended: padding, or the next member
                    if not data.strip(b"\x00"):
                        break
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                room = max_bytes + 1 - total  # one byte past the limit tells "more than" apart
                if total < RATIO_GRACE_BYTES:
                    room = min(room, RATIO_GRACE_BYTES - total)  # stop exactly at the grace, then check
                elif total > MAX_RATIO * taken.count:
                    raise Unreadable(f"a decompression bomb: {total:,} bytes decompressed from {taken.count:,} "
                                     f"compressed ({total // taken.count:,}:1), over {MAX_RATIO}:1 past the first "
                                     f"{RATIO_GRACE_BYTES:,} bytes")
                out = inflater.decompress(data, min(CHUNK_BYTES, room))
                total += len(out)
                if total > max_bytes:
                    raise _too_big(max_bytes)
                if out:
                    yield out
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    except zlib.error as e:
        raise Unreadable(f"not a readable gzip file: {e}") from None
    if not inflater.eof:
        raise Unreadable("the gzip stream is truncated")


def _text(chunks: Iterator[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in chunks:
            text = decoder.decode(chunk)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise Unreadable(f"not UTF-8 text: {e.reason}") from None
    if tail:
        yield tail


def _array(chunks: Iterator[str]) -> Iterator[Item]:
    """The elements of one JSON array, read chunk by chunk with the C decoder."""
    decoder = json.JSONDecoder()
    buffer, pos, ended = "", 0, False

    def more(at_least: int = 1) -> bool:
        """Append at least `at_least` characters (or up to the end); False if nothing was left."""
        nonlocal buffer, pos, ended
        added = []
        size = 0
        while size < at_least:
            chunk = next(chunks, None)
            if chunk is None:
                ended = True
                break
            added.append(chunk)
            size += len(chunk)
        if added:
            buffer = buffer[pos:] + "".join(added)
            pos = 0
        return bool(added)

    def skip_blank() -> str | None:
        """The next character that is not blank (not consumed), or None at the end."""
        nonlocal pos
        while True:
            found = _NOT_BLANK.search(buffer, pos)  # C speed: a gigabyte of blanks is seconds, not minutes
            if found:
                pos = found.start()
                return buffer[pos]
            pos = len(buffer)
            if not more():
                return None

    skip_blank()
    if buffer[pos] == _BOM:
        pos += 1
        skip_blank()
    pos += 1  # the '['
    number = 0
    if skip_blank() == "]":
        pos += 1
    else:
        while True:
            number += 1
            value = _decode_one(decoder, lambda: (buffer, pos), more, lambda: ended, number)
            buffer_value, end = value
            pos = end
            yield Item(number, buffer_value)
            if pos > CHUNK_BYTES:
                buffer, pos = buffer[pos:], 0
            following = skip_blank()
            if following == ",":
                pos += 1
                if skip_blank() is None:
                    raise Unreadable(f"the array ends after element {number} without ']'")
                continue
            if following == "]":
                pos += 1
                break
            if following is None:
                raise Unreadable(f"the array ends after element {number} without ']'")
            raise Unreadable(f"expected ',' or ']' after element {number}")
    if skip_blank() is not None:
        raise Unreadable("data after the end of the array")


def _decode_one(decoder: json.JSONDecoder, view, more, ended, number: int) -> tuple[object, int]:
    """Decode the value at the buffer's position, reading more while it may be cut off by a chunk's end.

    A value that ends exactly at the buffer's end may continue (a number cut in two), so it is
    decoded again once more text is there. Past MAX_EVENT_BYTES without a whole value, or at the end
    of the file, a decoding error is the file's; so is anything else decoding raises (deep nesting).
    """
    grow = CHUNK_BYTES
    while True:
        buffer, pos = view()
        try:
            value, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError as e:
            if len(buffer) - pos > MAX_EVENT_BYTES:
                raise Unreadable(f"element {number} is longer than the largest event accepted "
                                 f"({_mib(MAX_EVENT_BYTES)})") from None
            if ended():
                raise Unreadable(f"not JSON at element {number}: {e.msg}") from None
            more(grow)
            grow *= 2
            continue
        except Exception as e:  # the content's: RecursionError for deep nesting (module docstring)
            raise Unreadable(f"element {number} is not readable JSON: {_decoding_failed(e, buffer, pos)}") from None
        if end == len(buffer) and not ended():
            more(grow)
            continue
        return value, end


def _lines(chunks: Iterator[bytes]) -> Iterator[Item]:
    """JSON Lines: each non-blank line is one element; a line that does not parse is one bad item.

    Items are numbered by the file's lines. Raises Unreadable at the end if no line parsed at all
    (the file is not JSON Lines), naming the first bad line's reason.
    """
    pending, number, parsed, first_bad = b"", 0, 0, None
    long_bytes = 0  # > 0: the bytes of an over-long line seen so far (its text is dropped as it comes)
    decoder = json.JSONDecoder()
    for chunk in _with_end(chunks):
        if chunk is None:
            lines, pending = [pending], b""
        else:
            pending += chunk
            *lines, pending = pending.split(b"\n")
        for line in lines:
            number += 1
            size, long_bytes = long_bytes + len(line.rstrip(b"\r")), 0
            if size > MAX_EVENT_BYTES:  # one bad event, its size named, wherever the chunks broke it
                item = Item(number, None, f"the line is {size:,} bytes, longer than the largest event accepted "
                                          f"({_mib(MAX_EVENT_BYTES)})", "")
            else:
                item = _line_item(decoder, number, line)
                if item is None:
                    continue
            parsed += item.error is None
            if item.error is not None and first_bad is None:
                first_bad = item
            yield item
        if len(pending) > MAX_EVENT_BYTES:  # memory stays bounded: drop the line's text, keep counting
            long_bytes += len(pending)
            pending = b""
    if not parsed and first_bad is not None:
        raise Unreadable(f"no line of the file could be read (line {first_bad.number}: {first_bad.error})")


def _with_end(chunks: Iterator[bytes]) -> Iterator[bytes | None]:
    yield from chunks
    yield None


def _line_item(decoder: json.JSONDecoder, number: int, line: bytes) -> Item | None:
    text = line.strip(b" \t\r")
    if number == 1:
        text = text.lstrip(b"\xef\xbb\xbf")
    if not text:
        return None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return Item(number, None, "the line is not UTF-8", text[:MAX_HELD_CHARS].decode("utf-8", "replace"))
    try:
        return Item(number, decoder.decode(decoded))
    except json.JSONDecodeError as e:
        return Item(number, None, f"not JSON: {e.msg}", decoded[:MAX_HELD_CHARS])
    except Exception as e:  # the line's content (RecursionError for deep nesting): one bad event
        return Item(number, None, f"not readable JSON: {_decoding_failed(e, decoded, 0)}", decoded[:MAX_HELD_CHARS])
