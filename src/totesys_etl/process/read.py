"""What the ingestor wrote, checked against the declarations before anything trusts it.

A manifest entry is accepted only if it names one of the eleven source tables and exactly the key
the lake's layout gives that table in this run; anything else is hostile and never opened. A CSV
is read in record batches with the declared types and must match its declaration exactly: header,
types (money exact, never rounded), nullability and the manifest's row count. Any mismatch raises
`InvalidInput`, which the caller turns into a quarantine entry.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv

from totesys_etl import lake
from totesys_etl.errors import InvalidInput
from totesys_etl.schema import SOURCE_TABLES, Table, source_table

#: Bytes of CSV parsed per record batch: large enough to be fast, small enough that a
#: million-row file never sits in memory whole.
CSV_BLOCK_BYTES = 4 * 1024 * 1024

#: A reason quoted from a parser may carry a row's text; keep it to one short line.
_REASON_CHARS = 300

_SOURCE_NAMES = frozenset(t.name for t in SOURCE_TABLES)


@dataclass(frozen=True)
class FileEntry:
    """A manifest entry that names exactly the file the layout expects."""

    table: str
    key: str
    rows: int


@dataclass(frozen=True)
class RejectedEntry:
    """A manifest entry that must never be opened: the key it names and why."""

    table: str
    key: str
    reason: str


def manifest_entries(manifest: dict, run_id: str) -> tuple[list[FileEntry], list[RejectedEntry]]:
    """Split a manifest's `files` into trusted entries and hostile ones, each in table order.

    Which keys are trusted is `lake.manifest_files`; the processor also needs a row count.
    """
    trusted, hostile = lake.manifest_files(manifest, run_id, _SOURCE_NAMES, "csv")
    accepted, rejected = [], [RejectedEntry(*h) for h in hostile]
    for table, key, entry in trusted:
        rows = entry.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            rejected.append(RejectedEntry(table, key, f"entry for {table} has no valid row count"))
        else:
            accepted.append(FileEntry(table, key, rows))
    return accepted, sorted(rejected, key=lambda r: r.table)


def csv_options(table: Table) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    """pyarrow options that read PostgreSQL's `COPY … (FORMAT csv, HEADER true)` exactly.

    An unquoted empty field is NULL and `""` is the empty string (so NULL and '' stay apart);
    booleans are `t`/`f`; values in quotes may span lines. Empty lines are not skipped, so a
    stray one fails the null or row-count check instead of vanishing.
    """
    read = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=True)
    parse = pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
    convert = pa_csv.ConvertOptions(
        column_types={c.name: c.arrow_type for c in table.columns},
        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
        true_values=["t"], false_values=["f"], check_utf8=True)
    return read, parse, convert


def read_csv(path: str, table_name: str, expected_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield the file's typed record batches; raise `InvalidInput` as soon as it breaks its declaration.

    The row-count check comes after the last batch, so a caller must consume every batch (and
    publish nothing) before it knows the file is good.
    """
    table = source_table(table_name)
    schema = pa.schema([pa.field(c.name, c.arrow_type) for c in table.columns])
    required = [c.name for c in table.columns if not c.nullable]
    header = _header(path)
    if header != table.column_names:
        raise InvalidInput(f"header {_short(','.join(header or []))!r} is not the declared columns "
                           f"of {table_name}")
    rows = 0
    try:
        reader = pa_csv.open_csv(path, *csv_options(table))
        if not reader.schema.equals(schema):
            raise InvalidInput(f"columns of {table_name} do not read as their declared types")
        for batch in reader:
            for name in required:
                if batch.column(name).null_count:
                    raise InvalidInput(f"NULL in NOT NULL column {table_name}.{name} near row {rows + 1}")
            rows += batch.num_rows
            yield batch
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{table_name} CSV does not parse: {_short(str(e))}") from None
    if rows != expected_rows:
        raise InvalidInput(f"{table_name} CSV has {rows} rows, its manifest says {expected_rows}")


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
