"""Rows that do not fit their declaration: found per batch, held back alone (contract §3 "Nothing lost").

A check gives a `Problem`: a mask of the rows it fails and one reason for them all (a column and
a rule, never a value, so reasons stay short and group well). `HeldRows` writes the rows held back
from one file to a local CSV: the original text of each row as the ingestor wrote it (NULL an
empty field, '' a quoted one), its record number in the file and its reasons.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

if TYPE_CHECKING:
    from totesys_etl.process.read import Oversized

#: Columns appended to a held-back row (bookkeeping names start with `etl_`, as in the warehouse).
ROW_NUMBER, REASON = "etl_row", "etl_reason"


@dataclass(frozen=True)
class Problem:
    """The rows of a batch that break one rule (`rows` is True where they do)."""

    rows: pa.BooleanArray
    reason: str


def any_rows(problems: list[Problem]) -> bool:
    return any(p.rows.true_count for p in problems)


def bad_mask(problems: list[Problem], size: int) -> pa.BooleanArray:
    """True where any problem holds (a NULL in a mask counts as no problem)."""
    mask = pa.array([False] * size, pa.bool_())
    for problem in problems:
        mask = pc.or_(mask, pc.fill_null(problem.rows, False))
    return mask


def reasons(problems: list[Problem], bad: pa.BooleanArray) -> list[str]:
    """One reason string per bad row, in row order: every rule the row breaks, `; `-joined."""
    indices = pc.indices_nonzero(bad).to_pylist()
    per_row = {i: [] for i in indices}
    for problem in problems:
        flagged = pc.fill_null(problem.rows, False)
        for i in pc.indices_nonzero(flagged).to_pylist():
            per_row[i].append(problem.reason)
    return ["; ".join(per_row[i]) for i in indices]


class HeldRows:
    """The held-back rows of one file, appended batch by batch to a local CSV (memory stays bounded).

    `oversized` are the file's records that were never parsed (`read.Layout`): they count as held
    back from the start, the rows parsed after them keep their numbers in the file, and `close`
    appends their bytes, copied from `source` (the ingested file) in pieces.
    """

    def __init__(self, path: str, columns: list[str], source: str | None = None,
                 oversized: tuple[Oversized, ...] = ()):
        self.path = path
        self.columns = columns
        self.source = source
        self.oversized = oversized
        self.count = len(oversized)
        self.reasons: Counter = Counter(record.reason for record in oversized)
        self._writer = None
        self._skipped = sorted(record.number for record in oversized)

    def add(self, text: pa.RecordBatch, bad: pa.BooleanArray, first_row: int, why: list[str]) -> None:
        """Keep the rows of `text` (a batch read as text) where `bad` holds; `first_row` numbers its
        first (counting parsed rows only: the oversized records before a row are added here)."""
        if not why:
            return
        numbers = pc.add(pc.indices_nonzero(bad), first_row).cast(pa.int64())
        for skipped in self._skipped:   # ascending: each pushes the rows from it on by one
            numbers = pc.add(numbers, pc.greater_equal(numbers, skipped).cast(pa.int64()))
        held = text.filter(bad)
        batch = pa.RecordBatch.from_arrays(
            [*held.columns, numbers, pa.array(why, pa.string())],
            names=[*self.columns, ROW_NUMBER, REASON])
        if self._writer is None:
            # "needed" quotes every string, so '' is `""` and NULL an empty field, as COPY writes them.
            self._writer = pa_csv.CSVWriter(self.path, batch.schema,
                                            write_options=pa_csv.WriteOptions(quoting_style="needed"))
        self._writer.write_batch(batch)
        self.count += len(why)
        self.reasons.update(r for line in why for r in line.split("; "))

    def close(self) -> None:
        """Finish the file: the parsed rows, then the oversized records (the header first if alone)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif self.oversized:
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                header = [*self.columns, ROW_NUMBER, REASON]
                csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(header)
        if self.oversized:
            with open(self.source, "rb") as source, open(self.path, "ab") as out:
                for record in self.oversized:
                    source.seek(record.end - 1)
                    size = record.end - record.start - (source.read(1) == b"\n")  # the file's last may have none
                    source.seek(record.start)
                    _copy_bytes(source, out, size)
                    out.write(f',{record.number},"{record.reason}"\n'.encode())
            self.oversized = ()


def _copy_bytes(source, out, size: int) -> None:
    """Copy `size` bytes from `source`'s position to `out`, a piece at a time."""
    while size > 0:
        piece = source.read(min(size, 8 * 1024 * 1024))
        if not piece:
            return
        out.write(piece)
        size -= len(piece)
