"""A run's Parquet files into PostgreSQL temp tables through COPY, and quarantine for bad ones.

A file is downloaded to a temporary file (never held whole in memory), checked against its
declaration, and streamed batch by batch: each Arrow batch becomes one chunk of PostgreSQL's
binary COPY format (pgpq's encoder), sent as one CopyData message. Binary, not CSV: PostgreSQL
parses CSV dates, times and numerics character by character, and that parsing was the loader's
largest cost (114,000 payments: 163 ms from CSV, 65 ms from binary, server-side, same rows).
Each file is copied under a savepoint, so a file PostgreSQL rejects (a NULL where the declaration
forbids one, a value out of range) is rolled back alone and quarantined while the rest of the run
loads.

A file whose target table is empty when the run starts (a first load, a new table) is copied
straight into it, with the run's id as its `etl_run_id`: with nothing stored, every row of the file
is new, so the temp table and the merge would only copy the rows once more (at 100,000 orders
that second copy was a third of the load). It is tried under its own savepoint: if PostgreSQL
rejects it (a version or key twice in the file, bad data), the savepoint is rolled back and the
file goes the usual way, through a temp table and the merge, which judge it as they always have.

Only a file that is bad in itself is quarantined: not Parquet, another schema, corrupt pages, or
data PostgreSQL rejects. A transient fault (memory, a local I/O error, S3, a lost connection) is
raised, so the run fails and a later invocation retries it (contract §3, "Nothing lost").
"""
from __future__ import annotations

import os
from pathlib import Path
import tempfile
import concurrent.futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import pgpq
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError
from pg8000.native import identifier

from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import Connection, DatabaseError, copy_in, is_bad_data
from totesys_etl.errors import InvalidInput, describe, is_missing
from totesys_etl.load import bulk
from totesys_etl.schema.ddl import column_definitions
from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import RUN_ID

#: Rows per Arrow batch, so per COPY chunk (about 2 MB). PostgreSQL waits for a file's first chunk,
#: so a small one starts it sooner: a CSV COPY of 114,000 payments took 0.187 s with 65,536 rows,
#: 0.160 s with 16,384 (as fast as with every chunk made beforehand), 0.156 s with 8,192.
BATCH_ROWS = 16384
#: The buffer a Parquet file is read through (`open_parquet`).
READ_BUFFER_BYTES = 1024 * 1024
#: Sent in place of the rest of a file that fails to decode: a tuple of no fields (or, before the
#: header, a bad signature), which PostgreSQL always rejects (SQLSTATE 22P04, bad COPY data).
BROKEN_COPY_DATA = b"\x00\x00"


def is_transient(error: BaseException) -> bool:
    """Whether a failure reading a local Parquet file is the machine's fault, not the file's.

    Memory (pyarrow's ArrowMemoryError is a MemoryError) and an operating-system I/O error, which
    carries an errno. pyarrow reports a corrupt file as an OSError *without* an errno ("Couldn't
    deserialize thrift", a failed page checksum) or as ArrowInvalid: those are the file's fault.
    """
    return isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno is not None)


def temp_name(table: Table) -> str:
    return f"etl_tmp_{table.name}"


def check_schema(schema: pa.Schema, table: Table) -> None:
    """InvalidInput unless the file has exactly the declared columns and Arrow types, in order.

    Nullability is left to PostgreSQL (the temp table's NOT NULL), which sees the actual values.
    """
    expected = table.arrow_schema
    got = [(f.name, f.type) for f in schema]
    want = [(f.name, f.type) for f in expected]
    if got != want:
        raise InvalidInput(f"schema differs from the declaration of {table.name}: "
                           f"has {', '.join(f'{n} {t}' for n, t in got)}; "
                           f"declared {', '.join(f'{n} {t}' for n, t in want)}")


@dataclass(frozen=True)
class Copied:
    """A table's files copied in: their rows, whether they went straight into the (empty) table,
    and each file refused as bad in itself, `(key, why)`, for the caller to quarantine."""

    rows: int
    direct: bool
    refused: tuple[tuple[str, str], ...] = ()

    def loaded(self, files: int) -> bool:
        """Whether any of the table's `files` files was loaded (so its temp table holds the run's rows)."""
        return len(self.refused) < files


class _CopyFeed:
    """The file's batches as binary COPY data; a read error mid-file ends the COPY cleanly.

    An exception escaping while pg8000 streams a COPY would leave the protocol mid-copy, so a
    read error is kept and BROKEN_COPY_DATA is sent instead: the COPY fails as a normal statement
    error, rolled back to the file's savepoint, and `copy_file` then quarantines the file, or
    raises the kept error if it was transient.

    Every field is encoded as nullable, so a NULL in the file reaches PostgreSQL as NULL, whatever
    the file's schema claims, and a NOT NULL column rejects it as it would in any other way.
    """

    def __init__(self, parquet: pq.ParquetFile, columns: list[str], first_id: int | None = None):
        self.parquet, self.columns, self.next_id, self.error = parquet, columns, first_id, None
        fields = [pa.field(c, parquet.schema_arrow.field(c).type) for c in columns]
        if first_id is not None:  # the direct copy's first column: reserved surrogate keys, in order
            fields.insert(0, pa.field("id", pa.int32()))
        self.schema = pa.schema(fields)
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder(self.schema)
        self._batches: Iterator[pa.RecordBatch] | None = None

    def __iter__(self) -> Iterator[bytes]:
        """Each chunk is made in a worker thread while the one before it is sent, so decoding the
        Parquet and encoding (pyarrow's and pgpq's native code, which release the GIL) overlap
        PostgreSQL's parsing."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-feed") as worker:
            upcoming = worker.submit(self._next_chunk)
            while True:
                try:
                    chunk = upcoming.result()
                except Exception as e:  # any decoding failure of a damaged file
                    self.error = e
                    yield BROKEN_COPY_DATA
                    return
                if chunk is None:
                    return
                upcoming = worker.submit(self._next_chunk)
                yield chunk

    def _next_chunk(self) -> bytes | None:
        """The next batch as COPY data (the first with the format's header, the last with its
        trailer); None after the trailer."""
        header = b""
        if self._batches is None:
            # One thread: Arrow's pool (mimalloc) keeps what each of its decoding threads freed, 40 MB
            # more at 1M orders for no measurable gain here (the next chunk is decoded while PostgreSQL
            # parses this one anyway; readme_files/benchmarks.md, "The loader's memory").
            self._batches = iter(self.parquet.iter_batches(batch_size=BATCH_ROWS, columns=self.columns,
                                                           use_threads=False))
            header = bytes(self._encoder.write_header())
        elif self._encoder is None:
            return None
        batch = next(self._batches, None)
        if batch is None:
            trailer, self._encoder = bytes(self._encoder.finish()), None
            return header + trailer
        arrays = batch.columns
        if self.next_id is not None:
            arrays = [bulk.consecutive_ids(self.next_id, batch.num_rows), *arrays]
            self.next_id += batch.num_rows
        return header + bytes(self._encoder.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema)))


def open_parquet(path: str) -> pq.ParquetFile:
    """A downloaded Parquet file opened for reading batch by batch, its page checksums verified.

    Not pre-buffered: pyarrow's ParquetFile reads ahead the column chunks of every row group it
    will read (pre_buffer, its default, meant for high-latency object stores), which made the
    loader's memory grow with its largest file (1.14M payments: 51 MB of Arrow memory, and a peak
    RSS of 282 MB at 1M orders, 721 MB at 10M). Read from a local file through a 1 MB buffer, Arrow
    holds about one row group at a time (7 MB for the same file), and reads it no slower.
    """
    return pq.ParquetFile(path, page_checksum_verification=True, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)


def _download(bucket: str, key: str) -> str:
    """The object in a local temporary file (its path); InvalidInput if the manifest names a missing one."""
    fd, path = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        s3.download(bucket, key, path)
    except ClientError as e:
        Path(path).unlink(missing_ok=True)  # s3.download removes what it wrote when it fails midway
        if is_missing(e):
            raise InvalidInput("the file the manifest names does not exist") from None
        raise
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return path


def downloaded(bucket: str, keys: list[str]) -> Iterator[Future]:
    """Each key's download (a future of its local path), in order: the next file downloads while the caller copies
    this one, so S3 and PostgreSQL work at the same time. /tmp holds two files at most; each is
    deleted once the caller moves on, or stops."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="download") as worker:
        pending: list[Future] = [worker.submit(_download, bucket, keys[0])] if keys else []
        try:
            for i in range(len(keys)):
                if i + 1 < len(keys):
                    pending.append(worker.submit(_download, bucket, keys[i + 1]))
                yield pending[i]
                _discard(pending[i])
        finally:
            for future in pending:
                future.cancel()
            concurrent.futures.wait(pending)  # a download still running, so that it is deleted too
            for future in pending:
                _discard(future)


def _discard(future: Future) -> None:
    """Delete a finished download's file (a failed or cancelled one left none)."""
    if future.done() and not future.cancelled() and future.exception() is None and os.path.exists(future.result()):
        os.unlink(future.result())


@dataclass(frozen=True)
class TableFiles:
    """A run's files of one table, in order: its one file, or its parts (contract §4 "Parts")."""

    table: Table
    keys: tuple[str, ...]
    #: The rows the manifest counts for them: whether an empty table's indexes are worth rebuilding.
    rows: int


def copy_table(conn: Connection, bucket: str, files: TableFiles, downloads: Iterator[Future],
               direct_run_id: str | None = None) -> Copied:
    """COPY a table's files into a new temp table for it; `downloads` yields their downloads
    (`downloaded`), one per key, and is left at the next table's.

    With `direct_run_id` (the caller found the table empty), first straight into the table itself,
    every file under one savepoint and its indexes rebuilt once, each row with that `etl_run_id`;
    if PostgreSQL or the checks reject any file, that is rolled back and the files go into the temp
    table instead (downloaded again), where each is judged alone. A file refused there is rolled
    back alone and listed in `refused` (the caller quarantines it); the others stay.
    """
    fetched = (next(downloads) for _ in files.keys)
    if direct_run_id is not None:
        rows = _copy_direct(conn, fetched, files, direct_run_id)
        if rows is not None:
            return Copied(rows, direct=True)
        for _ in fetched:  # leave `downloads` at the next table's first file
            pass
        again = downloaded(bucket, list(files.keys))
        try:
            return _copy_to_temp(conn, files, again)
        finally:
            again.close()
    return _copy_to_temp(conn, files, fetched)


def _copy_to_temp(conn: Connection, files: TableFiles, fetched: Iterator[Future]) -> Copied:
    """Each file into the table's temp table under a savepoint of its own."""
    conn.run(create_temp_sql(files.table))
    rows, refused = 0, []
    for key, download in zip(files.keys, fetched):
        try:
            rows += _copy_file(conn, download, files.table)
        except InvalidInput as e:
            refused.append((key, str(e)))
    if len(refused) < len(files.keys):
        conn.run(f"ANALYZE {identifier(temp_name(files.table))}")
    return Copied(rows, direct=False, refused=tuple(refused))


def _open_checked(download: Future, table: Table) -> pq.ParquetFile:
    """The downloaded file, opened and checked against its declaration; InvalidInput if it is bad in
    itself (missing, not Parquet, another schema); a transient failure is raised as it is."""
    path = download.result()  # InvalidInput (missing), or S3's own error (the run fails)
    try:
        parquet = open_parquet(path)
    except Exception as e:  # ArrowInvalid, OSError: not a Parquet file; memory or I/O: transient
        if is_transient(e):
            raise
        raise InvalidInput(f"not a readable Parquet file: {describe(e)}") from None
    check_schema(parquet.schema_arrow, table)
    return parquet


def _copy_file(conn: Connection, download: Future, table: Table) -> int:
    """One file into the table's temp table (made by the caller) under a savepoint; the rows copied.

    Raises InvalidInput (the file is to be quarantined) with the temp table as it was before.
    """
    parquet = _open_checked(download, table)
    columns = [c.name for c in table.data_columns]
    conn.run("SAVEPOINT etl_file")
    feed = _CopyFeed(parquet, columns)
    try:
        rows = copy_in(conn, temp_name(table), columns, feed, binary=True)
    except DatabaseError as e:
        if not is_bad_data(e):  # anything else (a lost connection, a bug) fails the run
            raise
        conn.run("ROLLBACK TO SAVEPOINT etl_file")
        if feed.error and is_transient(feed.error):
            raise feed.error from None  # the read failed, not the data: the run fails, to be retried
        reason = describe(feed.error) if feed.error else e.args[0].get("M", "rejected by PostgreSQL")
        raise InvalidInput(f"PostgreSQL rejected the data: {reason}") from None
    conn.run("RELEASE SAVEPOINT etl_file")
    return rows


def _copy_direct(conn: Connection, fetched: Iterator[Future], files: TableFiles, run_id: str) -> int | None:
    """COPY every file straight into the table under one savepoint; None (rolled back) if
    PostgreSQL or the checks rejected one, so the caller takes the temp-table way. A transient
    failure is raised.

    How the empty table is filled fast (its indexes, `etl_run_id`, its surrogate key): bulk.py.
    The indexes are dropped once and built once for all the files, whatever their number.
    """
    table, columns = files.table, [c.name for c in files.table.data_columns]
    surrogate = [c.name for c in table.columns if c.type == "serial"]

    def fill() -> int:
        rows = 0
        with bulk.run_id_default(conn, table.name, RUN_ID.name, run_id):
            for download in fetched:
                parquet = _open_checked(download, table)
                expected = parquet.metadata.num_rows
                first_id = bulk.reserve_ids(conn, table.name, surrogate[0], expected) \
                    if surrogate and expected else None
                feed = _CopyFeed(parquet, columns, first_id)
                try:
                    rows += copy_in(conn, table.name, [*(surrogate[:1] if first_id is not None else []), *columns],
                                    feed, binary=True)
                except DatabaseError:
                    if feed.error and is_transient(feed.error):
                        raise feed.error from None  # the read failed, not the data: the run fails
                    raise
        return rows

    return bulk.filled_directly(conn, table.name, files.rows, fill, refused=InvalidInput)


def create_temp_sql(table: Table) -> str:
    """A temp table shaped as the lake's file (declared types and NOT NULLs, no keys), dropped at commit."""
    columns = ", ".join(column_definitions(table.data_columns))
    return f"CREATE TEMP TABLE {identifier(temp_name(table))} ({columns}) ON COMMIT DROP"
