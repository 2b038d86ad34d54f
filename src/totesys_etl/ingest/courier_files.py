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
- a JSON Lines line that is not JSON (or not UTF-8, or too long) is one bad event;
- any syntax error in a JSON array makes the whole file unreadable (there is no way to know where
  the next element starts), as does a file that is neither (`Unreadable`);
- a JSON value that is not a valid event is one bad event (`schema.courier.validate_event`).
"""
from __future__ import annotations

import codecs
import json
import zlib
from typing import BinaryIO, Iterator, NamedTuple

#: Bytes read from the object at a time.
CHUNK_BYTES = 1 << 16
#: The longest event accepted (a real one is ~200 bytes); longer makes the file unreadable.
MAX_EVENT_BYTES = 1 << 20
#: How much of a bad line a held-back event keeps.
MAX_HELD_CHARS = 10_000
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
_BLANK = " \t\r\n"


class Unreadable(Exception):
    """The file is not JSON at all (or not one this reader can take apart): quarantine it whole."""


class Item(NamedTuple):
    """One element of the file: its number (array index or line, from 1), the parsed value (None
    if it did not parse) and, if it did not, why, with its text."""

    number: int
    value: object
    error: str | None = None
    text: str = ""


def items(raw: BinaryIO) -> Iterator[Item]:
    """The file's elements in order; raises Unreadable (possibly after some items) for a bad file.

    `raw` is anything with `read(n)`, such as an S3 body. A caller that needs all-or-nothing keeps
    what it takes until the end (the ingest writes a local file and publishes it only then).
    """
    chunks = _decompressed(_chunks(raw))
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
    while True:
        chunk = raw.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _decompressed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The bytes as they are, or gunzipped if they start with gzip's magic (members may follow
    one another, as gzip allows; zero bytes after the last are padding)."""
    first = _at_least(chunks, lambda data: len(data) >= len(_GZIP_MAGIC))
    if not first.startswith(_GZIP_MAGIC):
        yield from _prepend(first, chunks)
        return
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        for data in _prepend(first, chunks):
            while data:
                if inflater.eof:  # a member ended: padding, or the next member
                    if not data.strip(b"\x00"):
                        break
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = inflater.decompress(data, CHUNK_BYTES)
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
            while pos < len(buffer) and buffer[pos] in _BLANK:
                pos += 1
            if pos < len(buffer):
                return buffer[pos]
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
    of the file, a decoding error is the file's.
    """
    grow = CHUNK_BYTES
    while True:
        buffer, pos = view()
        try:
            value, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError as e:
            if ended() or len(buffer) - pos > MAX_EVENT_BYTES:
                what = "longer than the largest event accepted" if len(buffer) - pos > MAX_EVENT_BYTES else e.msg
                raise Unreadable(f"not JSON at element {number}: {what}") from None
            more(grow)
            grow *= 2
            continue
        if end == len(buffer) and not ended():
            more(grow)
            continue
        return value, end


def _lines(chunks: Iterator[bytes]) -> Iterator[Item]:
    """JSON Lines: each non-blank line is one element; a line that does not parse is one bad item.

    Items are numbered by the file's lines. Raises Unreadable at the end if no line parsed at all
    (the file is not JSON Lines).
    """
    pending, number, parsed, bad, too_long = b"", 0, 0, 0, False
    decoder = json.JSONDecoder()
    for chunk in _with_end(chunks):
        if chunk is None:
            lines, pending = [pending], b""
        else:
            pending += chunk
            *lines, pending = pending.split(b"\n")
        for line in lines:
            number += 1
            if too_long:  # the rest of a line already too long: one bad event
                too_long = False
                bad += 1
                yield Item(number, None, f"the line is longer than {MAX_EVENT_BYTES} bytes", "")
                continue
            item = _line_item(decoder, number, line)
            if item is None:
                continue
            parsed += item.error is None
            bad += item.error is not None
            yield item
        if len(pending) > MAX_EVENT_BYTES:  # memory stays bounded: drop the line's text, keep counting
            pending, too_long = b"", True
    if not parsed and bad:
        raise Unreadable("no line of the file is JSON")


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
