"""What the ingestor wrote, checked against the declarations before anything trusts it.

Which manifest entries are trusted is `manifest.entries`'s call. A CSV is read in record batches
with the declared types and must match its declaration exactly: header, types (money exact, never
rounded), nullability, lengths, text PostgreSQL can hold (no NUL) and the manifest's row count.

A file that cannot be read at all (its header is not the declared columns, it is not UTF-8 or not
CSV, its row count is not the manifest's) raises `InvalidInput`: the caller quarantines it whole.
A row that does not fit its declaration is a `Problem` of that row alone. Clean files take the
fast path, `typed_batches` (pyarrow converts while it parses); the first row that does not fit
raises `NotClean`, and the caller reads the file again as text (`text_batches`) and converts each
batch itself (`from_text`), vectorised, down to single values only in a column that fails.

Big values (contract §2): pyarrow refuses a record that straddles two block boundaries, so a file
that fails to parse with the usual 4 MiB blocks is `scan`ned once for its record boundaries. The
`Layout` it gives sizes the blocks to the largest record and skips the records with a value over
`MAX_VALUE_BYTES` (each held back alone, `Oversized`). A file that still does not parse was never
CSV. Files with ordinary values never pay for the scan.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from totesys_etl.errors import InvalidInput
from totesys_etl.process.rows import Problem
from totesys_etl.schema import Column, Table
from totesys_etl.schema.model import NUL, nul_reason

#: Bytes of CSV parsed per record batch: large enough to be fast, small enough that a
#: million-row file never sits in memory whole.
CSV_BLOCK_BYTES = 4 * 1024 * 1024
#: The largest value that travels (contract §2 "Big values"); a row with a larger one is held back.
MAX_VALUE_BYTES = 64 * 1024 * 1024
#: Bytes read at a time by `scan` and by the reader that skips oversized records.
_SCAN_BYTES = 8 * 1024 * 1024

#: A reason quoted from a parser may carry a row's text; keep it to one short line.
_REASON_CHARS = 300

_VARCHAR = re.compile(r"varchar\((\d+)\)")
#: The zone offset PostgreSQL writes after a timestamptz (`+00`, `+05:30`, `-00:01:15`). A source
#: column changed from timestamp to timestamptz still fits (contract §2 "Schema changes"): without
#: its offset, the text is the wall clock in the ingestor's session zone, the server's zone that a
#: `timestamp` declaration means.
ZONE_OFFSET = r"[+-]\d{2}(?::\d{2}){0,2}$"
#: What pyarrow raises for data it cannot parse or convert (never for memory or I/O: those fail the run).
_UNREADABLE = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError)


class NotClean(Exception):
    """A batch of the fast path holds a row that does not fit: read the file again, row by row."""


@dataclass(frozen=True)
class Oversized:
    """A record with a value over the limit: its number among the data records (1 = the first after
    the header), its bytes in the file (`start` to `end`, its newline included), its largest value."""

    number: int
    start: int
    end: int
    column: str
    size: int
    limit: int

    @property
    def reason(self) -> str:
        return f"{self.column} holds {self.size:,} bytes, over the limit of {self.limit:,}"


@dataclass(frozen=True)
class Layout:
    """How to read a file: the block size its records need, and the records to skip (`Oversized`).

    The default is what every ordinary file gets: 4 MiB blocks, nothing skipped, nothing scanned.
    `records` (the data records the scan counted) is None when the file was not scanned.
    """

    block_bytes: int = 0
    oversized: tuple[Oversized, ...] = ()
    records: int | None = None

    @property
    def scanned(self) -> bool:
        return self.records is not None

    def source(self, path: str) -> str | io.RawIOBase:
        """What pyarrow reads: the path, or a stream of the file without the oversized records."""
        return _Skipping(path, self.oversized) if self.oversized else path


def csv_options(table: Table, as_text: bool = False, layout: Layout = Layout()
                ) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    """pyarrow options that read PostgreSQL's `COPY … (FORMAT csv, HEADER true)` exactly.

    An unquoted empty field is NULL and `""` is the empty string (so NULL and '' stay apart);
    booleans are `t`/`f`; values in quotes may span lines. Empty lines are not skipped, so a
    stray one fails the null or row-count check instead of vanishing. `as_text` reads every
    column as text, for the careful path.
    """
    read, parse = _read_and_parse(layout)
    convert = pa_csv.ConvertOptions(
        column_types={c.name: pa.string() if as_text else c.arrow_type for c in table.columns},
        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
        true_values=["t"], false_values=["f"], check_utf8=True)
    return read, parse, convert


def check_header(path: str, table: Table) -> None:
    """InvalidInput unless the first record is exactly the declared columns, in order."""
    header = _header(path)
    if header != table.column_names:
        raise InvalidInput(f"header {_short(','.join(header or []))!r} is not the declared columns "
                           f"of {table.name}")


def typed_batches(path: str, table: Table, layout: Layout = Layout()) -> Iterator[pa.RecordBatch]:
    """The fast path: batches converted by pyarrow as it parses; NotClean at the first value that
    does not convert (the file may still be bad as a whole: the careful path decides)."""
    try:
        reader = pa_csv.open_csv(layout.source(path), *csv_options(table, layout=layout))
        if not reader.schema.equals(table_schema(table)):
            raise NotClean()
        yield from reader
    except _UNREADABLE:
        raise NotClean() from None


def text_batches(path: str, table: Table, layout: Layout = Layout()) -> Iterator[pa.RecordBatch]:
    """The careful path: every column as text; InvalidInput if the file is not CSV or not UTF-8.

    With the default layout a file that does not parse may only hold a record too big for the
    blocks: `NeedsScan` says so, and the caller may read it again with `scan`'s layout."""
    try:
        yield from pa_csv.open_csv(layout.source(path), *csv_options(table, as_text=True, layout=layout))
    except _UNREADABLE as e:
        reason = f"{table.name} CSV does not parse: {_short(str(e))}"
        raise (InvalidInput if layout.scanned else NeedsScan)(reason) from None


class NeedsScan(InvalidInput):
    """The file did not parse in ordinary blocks: it is invalid unless `scan`'s layout reads it."""


def text_columns(path: str, columns: list[str]) -> pa.Table:
    """Some columns of a CSV this pipeline wrote (an ingested file, held-back rows), all as text.

    For readers that need some columns of a whole file (`history`), read as the processor reads:
    NULL an unquoted empty field, '' a quoted one; a big value never stops them, and a record with
    a value over MAX_VALUE_BYTES is left out, as the processor leaves it out (it holds it back).
    ArrowInvalid if the file is not CSV at all.
    """
    def read_with(layout: Layout) -> pa.Table:
        options = pa_csv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False)
        return pa_csv.open_csv(layout.source(path), *_read_and_parse(layout), convert_options=options).read_all()
    try:
        return read_with(Layout())
    except _UNREADABLE:
        return read_with(scan(path, _header(path) or []))


def _read_and_parse(layout: Layout) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions]:
    return (pa_csv.ReadOptions(block_size=max(CSV_BLOCK_BYTES, layout.block_bytes), use_threads=True),
            pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False))


def scan(path: str, names: list[str], limit: int | None = None) -> Layout:
    """The file's layout: blocks that hold its largest record, and the records to skip.

    One pass over the bytes that tracks only quotes and newlines (COPY's CSV: a newline outside
    quotes ends a record; a doubled quote inside a quoted value toggles twice): about 3 s per
    million rows on a busy 2-core machine, paid only by a file that did not parse in ordinary
    blocks. Records
    longer than `limit` (default MAX_VALUE_BYTES) are read a second time, field by field, to find
    their largest value; those over the limit are skipped (`Oversized`), the rest travel.
    """
    limit = MAX_VALUE_BYTES if limit is None else limit
    largest, oversized, number = 0, [], -1   # the header is record 0
    for start, end in _records(path):
        number += 1
        if number == 0:
            continue
        if end - start > limit:
            column, size = _largest_value(path, start, end, names)
            if size > limit:
                oversized.append(Oversized(number, start, end, column, size, limit))
                continue
        largest = max(largest, end - start)
    # A record may straddle one block boundary, never two: blocks as large as the largest record do.
    return Layout(block_bytes=largest + 1024 * 1024, oversized=tuple(oversized), records=max(number, 0))


_QUOTE_OR_COMMA = re.compile(rb'[",]')


def _records(path: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every record, header included; a last record without a newline ends the file.

    A newline ends a record when the quotes before it, from the record's start, are even (COPY
    quotes a value with a quote, comma or newline in it and doubles its quotes), so the file is
    split at newlines and only each line's quotes are counted, both in C.
    """
    quoted, offset, start = False, 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_SCAN_BYTES):
            lines = chunk.split(b"\n")
            end = offset
            for line in lines[:-1]:
                end += len(line) + 1
                quoted ^= line.count(b'"') & 1 == 1
                if not quoted:
                    yield start, end
                    start = end
            quoted ^= lines[-1].count(b'"') & 1 == 1   # a line that goes on in the next chunk
            offset += len(chunk)
    if offset > start:
        yield start, offset


def _largest_value(path: str, start: int, end: int, names: list[str]) -> tuple[str, int]:
    """The column and size in bytes of a record's largest value, as PostgreSQL holds it (the CSV's
    enclosing quotes not counted, a doubled quote counted once)."""
    sizes: list[int] = []
    field_start, quotes, doubled, quoted, last_quote, last_byte = start, 0, 0, False, -2, b""
    with open(path, "rb") as f:
        f.seek(start)
        offset = start
        while offset < end and (chunk := f.read(min(_SCAN_BYTES, end - offset))):
            i = 0
            while True:
                if quoted:
                    j = chunk.find(b'"', i)
                    if j < 0:
                        break
                    quoted, last_quote, quotes = False, offset + j, quotes + 1
                else:
                    match = _QUOTE_OR_COMMA.search(chunk, i)
                    if match is None:
                        break
                    j = match.start()
                    if chunk[j] == 0x22:
                        doubled += offset + j == last_quote + 1   # `""` inside a value: one quote
                        quoted, quotes = True, quotes + 1
                    else:
                        sizes.append(offset + j - field_start - quotes + doubled)
                        field_start, quotes, doubled = offset + j + 1, 0, 0
                i = j + 1
            offset, last_byte = offset + len(chunk), chunk[-1:]
    stop = end - 1 if last_byte == b"\n" else end
    sizes.append(stop - field_start - quotes + doubled)
    largest = max(range(len(sizes)), key=sizes.__getitem__)
    return (names[largest] if largest < len(names) else f"field {largest + 1}"), sizes[largest]


class _Skipping(io.RawIOBase):
    """A file read without some of its byte ranges (the oversized records), for pyarrow's reader."""

    def __init__(self, path: str, skipped: tuple[Oversized, ...]):
        self._file = open(path, "rb")
        self._skips = [(r.start, r.end) for r in sorted(skipped, key=lambda r: r.start)]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        position = self._file.tell()
        while self._skips and position >= self._skips[0][0]:
            position = self._file.seek(self._skips.pop(0)[1])
        wanted = len(buffer) if not self._skips else min(len(buffer), self._skips[0][0] - position)
        data = self._file.read(wanted)
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def table_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type) for c in table.columns])


def column_problems(table: Table, batch: pa.RecordBatch) -> list[Problem]:
    """Rows with a NULL in a NOT NULL column, or text PostgreSQL would refuse: longer than its
    varchar(n), or holding a NUL character (`schema.model.NUL`).

    `batch` is typed (fast path) or text (careful path): NULLs and text read the same in both. Only
    the declared text columns are searched for NUL: in any other, a NUL fails the conversion.
    """
    problems = []
    for column in table.columns:
        values = batch.column(column.name)
        if not column.nullable and values.null_count:
            problems.append(Problem(values.is_null(), f"{column.name} is NULL"))
        if column.arrow_type == pa.string():
            nul = _nul_rows(values)
            if nul is not None and nul.true_count:
                problems.append(Problem(nul, nul_reason(column.name)))
        limit = _VARCHAR.fullmatch(column.type)
        if limit:
            # The longest first: comparing every row with a Python int makes pyarrow import pandas (0.2 s).
            lengths, longest = pc.utf8_length(values), int(limit.group(1))
            if (pc.max(lengths).as_py() or 0) > longest:
                problems.append(Problem(pc.greater(lengths, longest), f"{column.name} is longer than {column.type}"))
    return problems


def _nul_rows(values: pa.Array) -> pa.BooleanArray | None:
    """The rows of a text column whose value holds a NUL, or None when none can.

    The usual answer comes from the column's bytes taken together, in one vectorised pass: their
    smallest byte is not 0 (about 0.7 ms per million 13-byte values, where `match_substring`, value
    by value, takes 30 to 50 ms). Only a column with a 0 byte under it is searched value by value.
    """
    offsets = pa.Array.from_buffers(pa.int32(), len(values) + 1, [None, values.buffers()[1]], offset=values.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    if end == start:
        return None
    data = pa.Array.from_buffers(pa.uint8(), end - start, [None, values.buffers()[2]], offset=start)
    if pc.min(data).as_py() != 0:
        return None
    return pc.match_substring(values, NUL)


def from_text(table: Table, text: pa.RecordBatch) -> tuple[pa.RecordBatch, list[Problem]]:
    """A text batch converted to the declared types, and the rows that do not fit.

    A value that does not convert becomes NULL in the typed batch and a problem of its row;
    conversions are the ones the fast path's reader makes, so a good row reads the same either way.
    """
    arrays, problems = [], []
    for column in table.columns:
        values, bad = _convert(text.column(column.name), column)
        arrays.append(values)
        if bad is not None:
            problems.append(Problem(bad, f"{column.name} does not read as {column.type}"))
    typed = pa.RecordBatch.from_arrays(arrays, schema=table_schema(table))
    return typed, problems + column_problems(table, text)  # NULL as written, not as converted


def _convert(text: pa.Array, column: Column) -> tuple[pa.Array, pa.BooleanArray | None]:
    """(values, rows whose value does not convert, or None): vectorised unless a value fails."""
    target = column.arrow_type
    if target == pa.string():
        return text, None
    if target == pa.bool_():  # COPY writes t and f, nothing else
        true, known = pc.equal(text, "t"), pc.is_in(text, pa.array(["t", "f"]))
        bad = pc.and_(text.is_valid(), pc.invert(pc.fill_null(known, False)))
        return pc.if_else(bad, pa.scalar(None, pa.bool_()), true), (bad if bad.true_count else None)
    if pa.types.is_timestamp(target):
        text = pc.replace_substring_regex(text, ZONE_OFFSET, "")
    try:
        return text.cast(target), None
    except _UNREADABLE:
        pass
    bad = pa.array([value is not None and not _converts(value, target) for value in text.to_pylist()])
    return pc.if_else(bad, pa.scalar(None, pa.string()), text).cast(target), bad


def _converts(value: str, target: pa.DataType) -> bool:
    try:
        pa.array([value], pa.string()).cast(target)
    except _UNREADABLE:
        return False
    return True


def check_count(table: Table, rows: int, expected_rows: int) -> None:
    """InvalidInput unless the file held as many rows (good and held back) as its manifest says."""
    if rows != expected_rows:
        raise InvalidInput(f"{table.name} CSV has {rows} rows, its manifest says {expected_rows}")


def _header(path: str) -> list[str] | None:
    """The first record's fields, read before any typed parsing so a wrong header is named as such."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return next(csv.reader(f), None)
    except csv.Error:
        return None


def _short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line[:_REASON_CHARS]
