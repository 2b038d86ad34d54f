"""A run's Parquet files into PostgreSQL temp tables through COPY, and quarantine for bad ones.

A file is downloaded to a temporary file (never held whole in memory), checked against its
declaration, and streamed batch by batch: each Arrow batch becomes one header-less CSV chunk
(pyarrow quotes every string and leaves NULL as an unquoted empty field: exactly COPY's CSV),
sent as one CopyData message. Each file is copied under a savepoint, so a file PostgreSQL
rejects (a NULL where the declaration forbids one, a value out of range) is rolled back alone
and quarantined while the rest of the run loads.

Only a file that is bad in itself is quarantined: not Parquet, another schema, corrupt pages, or
data PostgreSQL rejects. A transient fault (memory, a local I/O error, S3, a lost connection) is
raised, so the run fails and a later invocation retries it (contract §3, "Nothing lost").
"""
from __future__ import annotations

import io
import os
import tempfile
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from botocore.exceptions import ClientError
from pg8000.native import identifier

from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import Connection, DatabaseError, copy_in
from totesys_etl.errors import InvalidInput, describe, is_missing
from totesys_etl.schema.ddl import column_definitions
from totesys_etl.schema.model import Table

#: Rows per Arrow batch, so per CSV chunk (a few MB): big enough for COPY's speed, small for memory.
BATCH_ROWS = 65536
#: SQLSTATE classes that mean "this file's data is bad" (22 data exception, 23 integrity):
#: quarantine the file. Anything else (a lost connection, a bug) fails the run.
_BAD_DATA_CLASSES = ("22", "23")
_CSV_OPTIONS = pacsv.WriteOptions(include_header=False)


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


class _CsvFeed:
    """The file's batches as CSV chunks; a read error mid-file ends the COPY cleanly.

    An exception escaping while pg8000 streams a COPY would leave the protocol mid-copy, so a
    read error is kept and a NUL byte (which PostgreSQL always rejects, SQLSTATE 22021) is sent
    instead: the COPY fails as a normal statement error, rolled back to the file's savepoint, and
    `copy_file` then quarantines the file, or raises the kept error if it was transient.
    """

    def __init__(self, parquet: pq.ParquetFile, columns: list[str]):
        self.parquet, self.columns, self.error = parquet, columns, None

    def __iter__(self) -> Iterator[bytes]:
        try:
            for batch in self.parquet.iter_batches(batch_size=BATCH_ROWS, columns=self.columns):
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer, _CSV_OPTIONS)
                yield buffer.getvalue()
        except Exception as e:  # any decoding failure of a damaged file
            self.error = e
            yield b"\x00\n"


def copy_file(conn: Connection, bucket: str, key: str, table: Table) -> int:
    """COPY the Parquet object `key` into a new temp table for `table`; the rows copied.

    Raises InvalidInput (the file is to be quarantined) with the transaction as it was before.
    """
    fd, path = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    savepoint_taken, feed = False, None
    columns = [c.name for c in table.data_columns]
    try:
        try:
            s3.download(bucket, key, path)
        except ClientError as e:
            if is_missing(e):
                raise InvalidInput("the file the manifest names does not exist") from None
            raise
        try:
            parquet = pq.ParquetFile(path, page_checksum_verification=True)
        except Exception as e:  # ArrowInvalid, OSError: not a Parquet file; memory or I/O: transient
            if is_transient(e):
                raise
            raise InvalidInput(f"not a readable Parquet file: {describe(e)}") from None
        check_schema(parquet.schema_arrow, table)
        conn.run("SAVEPOINT etl_file")
        savepoint_taken = True
        conn.run(create_temp_sql(table))
        feed = _CsvFeed(parquet, columns)
        rows = copy_in(conn, temp_name(table), columns, feed)
        conn.run("RELEASE SAVEPOINT etl_file")
        conn.run(f"ANALYZE {identifier(temp_name(table))}")
        return rows
    except DatabaseError as e:
        code = e.args[0].get("C", "") if e.args and isinstance(e.args[0], dict) else ""
        if not savepoint_taken or not code.startswith(_BAD_DATA_CLASSES):
            raise
        conn.run("ROLLBACK TO SAVEPOINT etl_file")
        if feed and feed.error and is_transient(feed.error):
            raise feed.error from None  # the read failed, not the data: the run fails, to be retried
        reason = describe(feed.error) if feed and feed.error else e.args[0].get("M", "rejected by PostgreSQL")
        raise InvalidInput(f"PostgreSQL rejected the data: {reason}") from None
    finally:
        os.unlink(path)


def create_temp_sql(table: Table) -> str:
    """A temp table shaped as the lake's file (declared types and NOT NULLs, no keys), dropped at commit."""
    columns = ", ".join(column_definitions(table.data_columns))
    return f"CREATE TEMP TABLE {identifier(temp_name(table))} ({columns}) ON COMMIT DROP"
