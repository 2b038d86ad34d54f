"""Transient faults while reading a run's Parquet fail the run, to be retried; only bad files are quarantined.

A real out-of-memory or disk fault cannot be produced on demand, so these tests make pyarrow's
reader raise at its edge (the library call), as it does when the machine is short of memory or a
local read fails. Everything else is real: moto's S3, PostgreSQL, the loader's transaction.
"""
from __future__ import annotations

import errno
import os
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from totesys_etl.errors import LoadFailed
from totesys_etl.load import files
from totesys_etl.load.files import is_transient
from totesys_etl.load.ledger import loaded_runs
from totesys_etl.load.run import load, warehouse_connection

TODAY = date(2024, 11, 14)


def _fail_once(error: BaseException):
    """A replacement for a pyarrow call that raises `error` on its first call, then behaves."""
    calls = []

    def install(original):
        def replacement(*args, **kwargs):
            if not calls:
                calls.append(1)
                raise error
            return original(*args, **kwargs)
        return replacement
    return install, calls


@pytest.mark.parametrize("where, error", [
    ("read", pa.ArrowMemoryError("malloc of size 67108864 failed")),
    ("read", MemoryError()),
    ("open", MemoryError()),
    ("open", OSError(errno.EIO, "Input/output error")),
    ("read", OSError(errno.ENOSPC, "No space left on device")),
])
def test_a_transient_read_failure_fails_the_run_quarantines_nothing_and_a_rerun_loads_it(
        settings, processed_lake, totesys, kit, warehouse_url, run_sql, monkeypatch, log_lines, where, error):
    processed_lake.write_run(kit.run_id(1), {t: list(rows.values()) for t, rows in totesys.rows.items()})
    install, calls = _fail_once(error)
    if where == "read":
        monkeypatch.setattr(pq.ParquetFile, "iter_batches", install(pq.ParquetFile.iter_batches))
    else:
        monkeypatch.setattr(pq, "ParquetFile", install(pq.ParquetFile))

    with pytest.raises(LoadFailed):
        load(settings, [kit.run_id(1)], today=TODAY)
    assert calls == [1]
    assert processed_lake.keys("quarantine/") == []
    assert loaded_runs(warehouse_connection(settings)) == set()
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[0]]
    assert not any(line.get("error_kind", "").startswith("quarantined") for line in log_lines)

    result = load(settings, [kit.run_id(1)], today=TODAY)             # the retry loads it all
    assert result["runs"][0]["quarantined"] == 0
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[2]]
    assert processed_lake.keys("quarantine/") == []


def test_what_is_transient_and_what_is_bad_data():
    assert is_transient(MemoryError()) and is_transient(pa.ArrowMemoryError("oom"))
    assert is_transient(OSError(errno.EIO, "Input/output error"))
    assert not is_transient(OSError("Couldn't deserialize thrift: No more data to read."))  # pyarrow: corrupt
    assert not is_transient(pa.ArrowInvalid("Parquet magic bytes not found in footer"))


def test_a_load_leaves_nothing_in_tmp_whether_it_loads_or_fails(
        settings, processed_lake, totesys, kit, monkeypatch, tmp_path):
    """Files are downloaded one ahead of the COPY (two in /tmp at most); every one is deleted."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    versions = {t: list(rows.values()) for t, rows in totesys.rows.items()}
    processed_lake.write_run(kit.run_id(1), versions)
    processed_lake.write_run(kit.run_id(2), versions)
    opened = []
    original = pq.ParquetFile

    def recording(path, *args, **kwargs):
        opened.append(path)
        return original(path, *args, **kwargs)
    monkeypatch.setattr(pq, "ParquetFile", recording)

    load(settings, [kit.run_id(1)], today=TODAY)
    assert len(opened) > 3 and list(folder.iterdir()) == []

    install, calls = _fail_once(MemoryError())
    monkeypatch.setattr(pq, "ParquetFile", install(recording))
    with pytest.raises(LoadFailed):
        load(settings, [kit.run_id(2)], today=TODAY)      # fails at its first file, the next downloaded
    assert calls == [1] and list(folder.iterdir()) == []


def test_binary_copy_stores_every_declared_type_exactly_as_csv_did(warehouse_url, tmp_path):
    """The loader sends binary COPY (pgpq); the CSV it sent before is the reference: the same rows,
    edge values and NULLs included, must be stored identically, down to each numeric's scale."""
    import io

    import pyarrow.csv as pacsv

    from totesys_etl.adapters import postgres
    from totesys_etl.config import Database
    from totesys_etl.load import files
    from totesys_etl.schema.model import arrow_type

    types = {"i": "int", "s": "varchar", "n": "numeric", "m": "numeric(10,2)", "d": "date", "t": "time",
             "ts": "timestamp", "b": "boolean"}
    values = {
        "i": [-2147483648, 2147483647, 0, None, 7],
        "s": ["", None, "zoë 🎉\nline", 'a,"b"', "x" * 5000],
        "n": ["0", "-0.0000000001", "12345678901234567890.1234567890", "-99999999999999999999.9999999999", None],
        "m": ["99999999.99", "-0.01", "0", None, "1.50"],
        "d": [date(1, 1, 1), date(1999, 12, 31), date(2000, 1, 1), date(9999, 12, 31), None],
        "t": ["00:00:00", "23:59:59.999999", "12:00:00.5", None, "00:00:00.000001"],
        "ts": ["1970-01-01 00:00:00", "2000-01-01 00:00:00", "1999-12-31 23:59:59.999999",
               "9999-12-31 23:59:59.999999", None],
        "b": [True, False, None, True, False],
    }
    import datetime as dt
    from decimal import Decimal
    parse = {"n": Decimal, "m": Decimal, "t": dt.time.fromisoformat, "ts": dt.datetime.fromisoformat}
    table = pa.table({c: pa.array([None if v is None else parse.get(c, lambda x: x)(v) for v in values[c]],
                                  arrow_type(types[c])) for c in types})
    path = tmp_path / "edge.parquet"
    pq.write_table(table, path)
    conn = postgres.connect(Database("warehouse", warehouse_url, "x"))
    columns = ", ".join(f"{c} {t}" for c, t in types.items())
    conn.run(f"CREATE TABLE via_binary ({columns})")
    conn.run(f"CREATE TABLE via_csv ({columns})")
    feed = files._CopyFeed(pq.ParquetFile(path), list(types))
    assert postgres.copy_in(conn, "via_binary", list(types), feed, binary=True) == 5
    csv = io.BytesIO()
    pacsv.write_csv(table, csv, pacsv.WriteOptions(include_header=False))
    assert postgres.copy_in(conn, "via_csv", list(types), [csv.getvalue()]) == 5
    as_text = ", ".join(f"{c}::text" for c in types)
    stored = [conn.run(f"SELECT {as_text} FROM {t} ORDER BY i NULLS FIRST, s") for t in ("via_binary", "via_csv")]
    assert stored[0] == stored[1]
    assert {"12345678901234567890.1234567890", "-0.0000000001"} <= {r[2] for r in stored[0]}
    conn.close()


@pytest.mark.parametrize("column, arrow, value", [
    ("t time", pa.time64("us"), 25 * 3600 * 1_000_000),              # a time past midnight: no such time
    ("s varchar(3)", pa.string(), "four"),                              # longer than declared
    ("s varchar", pa.string(), "nul \x00 byte"),                        # text cannot hold NUL
    ("ts timestamp", pa.timestamp("us"), -2**62),                       # before 4714 BC, PostgreSQL's first day
])
def test_a_value_postgresql_cannot_store_fails_the_binary_copy_as_bad_data(warehouse_url, tmp_path, column,
                                                                           arrow, value):
    """What makes `copy_file` quarantine a file: SQLSTATE class 22 from PostgreSQL, as with CSV."""
    from totesys_etl.adapters import postgres
    from totesys_etl.config import Database
    from totesys_etl.load import files

    name = column.split()[0]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({name: pa.array([value], arrow)}), path)
    conn = postgres.connect(Database("warehouse", warehouse_url, "x"))
    conn.run(f"CREATE TABLE bad ({column})")
    with pytest.raises(postgres.DatabaseError) as rejected:
        postgres.copy_in(conn, "bad", [name], files._CopyFeed(pq.ParquetFile(path), [name]), binary=True)
    assert postgres.sqlstate(rejected.value).startswith("22")
    assert conn.run("SELECT count(*) FROM bad") == [[0]]
    conn.close()


def test_reading_a_file_for_copy_holds_a_row_group_in_memory_not_the_file(tmp_path):
    """pyarrow's ParquetFile pre-buffers by default: reading batches held every row group's column
    chunks at once (36 MB of a 47 MB file of 1.1M payments), so the loader's memory grew with its
    largest file. Read through `files.open_parquet`, Arrow holds about one row group at a time."""
    groups, rows = 24, 20_000
    path = str(tmp_path / "many-groups.parquet")
    noise = pa.array([os.urandom(24).hex() for _ in range(rows)])        # incompressible: ~1 MB per group
    with pq.ParquetWriter(path, pa.schema([("id", pa.int32()), ("text", pa.string())])) as writer:
        for g in range(groups):
            writer.write_table(pa.table({"id": pa.array(range(g * rows, (g + 1) * rows), pa.int32()), "text": noise}))
    size = os.path.getsize(path)
    pool, before, most = pa.default_memory_pool(), pa.default_memory_pool().bytes_allocated(), 0
    feed = files._CopyFeed(files.open_parquet(path), ["id", "text"])
    chunks = 0
    for _chunk in feed:
        most, chunks = max(most, pool.bytes_allocated() - before), chunks + 1
    assert chunks > groups and feed.error is None
    assert most < size / 4, (most, size)


def test_a_download_failing_midway_raises_its_own_error_not_a_missing_temporary_file(monkeypatch, tmp_path):
    """s3.download leaves no file behind when it fails after writing (e.g. the object replaced
    between two ranges: 412); the loader's clean-up must not then hide that error."""
    from botocore.exceptions import ClientError

    def fails_midway(bucket, key, path):
        os.remove(path)  # as s3.download does on a failure
        raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions "
                                     "you specified did not hold"}}, "GetObject")

    monkeypatch.setattr(files.s3, "download", fails_midway)
    monkeypatch.setattr(files.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ClientError, match="PreconditionFailed"):
        files._download("bucket", "key.parquet")
    assert list(tmp_path.iterdir()) == []
