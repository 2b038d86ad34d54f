"""Tables copied whole under one REPEATABLE READ snapshot, lined up with the slot (contract §10).

The first CDC run copies the eleven tables; a table stopped for a missing column is copied again
once its columns are back. A `Copy` records the snapshot and the WAL insert position after it, so
the changes runs can tell which of the slot's transactions the copy already holds (ADR 0005).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from pg8000.native import identifier

from totesys_etl.adapters import postgres
from totesys_etl.config import Database
from totesys_etl.ingest import parts
from totesys_etl.ingest.cdc import pgoutput
from totesys_etl.ingest.cdc.files import upload
from totesys_etl.ingest.xids import XID_SPAN
from totesys_etl.logs import StageLog, Timer
from totesys_etl.schema import SOURCE_TABLES
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table


@dataclass(frozen=True)
class Copy:
    """Tables copied whole in one REPEATABLE READ snapshot (`snapshot`, the `pg_snapshot` text) and the
    WAL insert position when it was taken (`lsn`): a transaction that committed before `lsn` and is
    visible in `snapshot` is in the copy, so the slot's record of it is not shipped again."""

    snapshot: str
    lsn: int

    def covers(self, commit_lsn: int, xid: int) -> bool:
        """True if the transaction committed at `commit_lsn` with top-level id `xid` (32-bit) is in the copy."""
        if commit_lsn >= self.lsn:
            return False
        xmin, xmax, xip = parse_snapshot(self.snapshot)
        full = (xmax >> 32 << 32) | xid  # the id in the snapshot's epoch, or the one before
        if full >= xmax:
            full -= XID_SPAN
        return full < xmin or (full < xmax and full not in xip)

    def to_json(self) -> dict:
        return {"snapshot": self.snapshot, "lsn": pgoutput.lsn_text(self.lsn)}

    @classmethod
    def from_json(cls, entry) -> "Copy":
        parse_snapshot(entry["snapshot"])  # ValueError if it is not one
        return cls(entry["snapshot"], pgoutput.parse_lsn(entry["lsn"]))


def parse_snapshot(text: str) -> tuple[int, int, frozenset[int]]:
    """A `pg_snapshot`'s text as (xmin, xmax, the ids in progress); ValueError if it is not one."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


def copy_tables(conn, source: Database, bucket: str, run_id: str, tables: list[Table], folder: str,
                log: StageLog) -> tuple[Copy, dict, dict]:
    """Copy `tables` whole in one REPEATABLE READ transaction into the run's CSVs: the `Copy` that
    says which of the slot's transactions it holds, the files and the rows. A table over
    TOTESYS_PART_ROWS rows goes in parts, read by connections that import this transaction's
    snapshot (ingest/parts.py, as a polled first run)."""
    files, rows, readers = {}, {}, None
    with postgres.transaction(conn, "REPEATABLE READ", read_only=True):
        snapshot, snapshot_lsn = conn.run(
            "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text")[0]
        selects = {t.name: f"SELECT {column_list(t.column_names)} FROM public.{identifier(t.name)}"  # nosec B608
                   for t in tables}
        limit, sizes = parts.part_rows(), parts.sizes(conn, list(tables))
        splits = {t.name: found for t in tables
                  if (found := parts.split(conn, t, selects[t.name], limit, sizes.get(t.name, (-1, 0)))) is not None}
        if splits:
            readers = parts.start(conn, source, bucket, run_id, splits, folder, log)
        try:
            for table in tables:
                if table.name in splits:
                    continue
                timer = Timer()
                path = os.path.join(folder, f"{table.name}.csv")
                with open(path, "wb", buffering=1 << 20) as file:
                    rows[table.name] = postgres.copy_out(conn, selects[table.name], file)
                log.info("table extracted", table=table.name, rows=rows[table.name], seconds=timer.seconds)
                if rows[table.name]:
                    files[table.name] = upload(bucket, table, run_id, path, rows[table.name])
        except BaseException:
            if readers is not None:
                readers.stop()
            raise
    if readers is not None:
        parted_files, parted_rows = parts.finish(readers, splits, run_id)
        files.update(parted_files)
        rows.update(parted_rows)
    return Copy(snapshot, pgoutput.parse_lsn(snapshot_lsn)), files, rows


def source_shape(conn) -> tuple[dict[str, tuple[str, ...]], dict[str, list[str]]]:
    """Source table -> the declared columns it lacks now (a dropped or renamed column), and source
    table -> the columns it has beyond the declaration (ignored, recorded as `new_columns` as the
    polling run does: contract §2); tables with none are absent."""
    present = postgres.table_columns(conn, [t.name for t in SOURCE_TABLES])
    lacking, added = {}, {}
    for table in SOURCE_TABLES:
        columns = present.get(table.name, set())
        if missing := tuple(c for c in table.column_names if c not in columns):
            lacking[table.name] = missing
        if extra := sorted(columns - set(table.column_names)) if columns else []:
            added[table.name] = extra
    return lacking, added
