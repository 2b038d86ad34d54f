"""Load the real totesys snapshot (`test/data/totesys-snapshot-2024-11-14/`) into a source database.

Data nobody on the team generated: ids with gaps, the live system's own text. Tests and the
benchmark load it the way `seed` builds its tables (the same DDL, keys and indexes after the
COPY, the same grants), so the pipeline meets it exactly as it meets generated data.
"""
from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

from totesys_etl.adapters.postgres import copy_in, transaction
from totesys_etl.errors import ConfigurationError
from totesys_etl.local.source.source_db import (admin_connect, create_source_tables, csv_rows, finish_source_tables,
                                                prepare_session, source_errors)
from totesys_etl.schema import SOURCE_TABLES

#: The project's copy of the snapshot (contract §2: a clone has no ../shared).
SNAPSHOT = Path(__file__).resolve().parents[4] / "test" / "data" / "totesys-snapshot-2024-11-14"

_CHUNK_ROWS = 5000


def _chunks(path: Path, columns: list[str]):
    """CSV chunks from a `.jsonl.gz` file, columns in declared order.

    Numbers parse as Decimal, so money arrives exactly; a missing column is an error, not NULL.
    """
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = json.loads(line, parse_float=Decimal)
            missing = [c for c in columns if c not in record]
            if missing:
                raise ConfigurationError(f"{path.name} line {number} lacks {', '.join(missing)}")
            rows.append([record[c] for c in columns])
            if len(rows) == _CHUNK_ROWS:
                yield csv_rows(rows)
                rows = []
    if rows:
        yield csv_rows(rows)


def load_snapshot(admin_url: str, folder: Path = SNAPSHOT) -> dict[str, int]:
    """Drop and recreate the eleven tables from `folder/<table>.jsonl.gz`; row count per table.

    A table without a file (the snapshot has no `payment`) stays empty.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigurationError(f"no snapshot folder at {folder}")
    conn = admin_connect(admin_url, "load_snapshot")
    try:
        with source_errors("loading the snapshot"), transaction(conn):
            prepare_session(conn)
            create_source_tables(conn)
            for table in SOURCE_TABLES:
                path = folder / f"{table.name}.jsonl.gz"
                if path.exists():
                    copy_in(conn, table.name, table.column_names, _chunks(path, table.column_names))
            return finish_source_tables(conn)
    finally:
        conn.close()
