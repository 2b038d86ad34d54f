"""What the ingestor wrote, checked against the declarations before anything trusts it.

Which manifest entries are trusted is `manifest.entries`'s call. A CSV is read in record batches
with the declared types and must match its declaration exactly: header, types (money exact, never
rounded), nullability, lengths and the manifest's row count.

A file that cannot be read at all (its header is not the declared columns, it is not UTF-8 or not
CSV, its row count is not the manifest's) raises `InvalidInput`: the caller quarantines it whole.
A row that does not fit its declaration is a `Problem` of that row alone. Clean files take the
fast path, `typed_batches` (pyarrow converts while it parses); the first row that does not fit
raises `NotClean`, and the caller reads the file again as text (`text_batches`) and converts each
batch itself (`from_text`), vectorised, down to single values only in a column that fails.
"""
from __future__ import annotations

import csv
import re
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from totesys_etl.errors import InvalidInput
from totesys_etl.process.rows import Problem
from totesys_etl.schema import Column, Table

#: Bytes of CSV parsed per record batch: large enough to be fast, small enough that a
#: million-row file never sits in memory whole.
CSV_BLOCK_BYTES = 4 * 1024 * 1024

#: A reason quoted from a parser may carry a row's text; keep it to one short line.
_REASON_CHARS = 300

_VARCHAR = re.compile(r"varchar\((\d+)\)")
#: What pyarrow raises for data it cannot parse or convert (never for memory or I/O: those fail the run).
_UNREADABLE = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError)


class NotClean(Exception):
    """A batch of the fast path holds a row that does not fit: read the file again, row by row."""


def csv_options(table: Table, as_text: bool = False
                ) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    """pyarrow options that read PostgreSQL's `COPY … (FORMAT csv, HEADER true)` exactly.

    An unquoted empty field is NULL and `""` is the empty string (so NULL and '' stay apart);
    booleans are `t`/`f`; values in quotes may span lines. Empty lines are not skipped, so a
    stray one fails the null or row-count check instead of vanishing. `as_text` reads every
    column as text, for the careful path.
    """
    read = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=True)
    parse = pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
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


def typed_batches(path: str, table: Table) -> Iterator[pa.RecordBatch]:
    """The fast path: batches converted by pyarrow as it parses; NotClean at the first value that
    does not convert (the file may still be bad as a whole: the careful path decides)."""
    try:
        reader = pa_csv.open_csv(path, *csv_options(table))
        if not reader.schema.equals(table_schema(table)):
            raise NotClean()
        yield from reader
    except _UNREADABLE:
        raise NotClean() from None


def text_batches(path: str, table: Table) -> Iterator[pa.RecordBatch]:
    """The careful path: every column as text; InvalidInput if the file is not CSV or not UTF-8."""
    try:
        yield from pa_csv.open_csv(path, *csv_options(table, as_text=True))
    except _UNREADABLE as e:
        raise InvalidInput(f"{table.name} CSV does not parse: {_short(str(e))}") from None


def table_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type) for c in table.columns])


def column_problems(table: Table, batch: pa.RecordBatch) -> list[Problem]:
    """Rows with a NULL in a NOT NULL column or text longer than its varchar(n).

    `batch` is typed (fast path) or text (careful path): NULLs and text read the same in both.
    """
    problems = []
    for column in table.columns:
        values = batch.column(column.name)
        if not column.nullable and values.null_count:
            problems.append(Problem(values.is_null(), f"{column.name} is NULL"))
        limit = _VARCHAR.fullmatch(column.type)
        if limit:
            # The longest first: comparing every row with a Python int makes pyarrow import pandas (0.2 s).
            lengths, longest = pc.utf8_length(values), int(limit.group(1))
            if (pc.max(lengths).as_py() or 0) > longest:
                problems.append(Problem(pc.greater(lengths, longest), f"{column.name} is longer than {column.type}"))
    return problems


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
