"""A run's deleted source rows into `etl_deleted_row` (contract §10 "Deletes", schema/cdc.py).

Only ever inserted, one row per (table, id, run): a replay finds its rows there and inserts
nothing. Whether an id is deleted now is derived where it is read (`schema.cdc.deleted_after`),
from the newest delete against the newest version, so a delete loaded after a newer re-insert
(runs out of order) never hides the row.
"""
from __future__ import annotations

from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection
from totesys_etl.load.files import temp_name
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import RUN_ID


def record_deletes(conn: Connection, log: Table, run_id: str) -> int:
    """Insert the run's deletes not recorded yet; rows inserted."""
    names = log.column_names
    target, tmp = identifier(log.name), identifier(temp_name(log))
    keys = " AND ".join(f"e.{identifier(c)} = n.{identifier(c)}" for c in log.key)
    conn.run(f"INSERT INTO {target} ({column_list([*names, RUN_ID.name])}) "  # nosec B608 - declared names
             f"SELECT DISTINCT ON ({column_list(log.key)}) {column_list(names)}, CAST(:run_id AS text) "
             f"FROM {tmp} AS n WHERE NOT EXISTS (SELECT 1 FROM {target} AS e WHERE {keys} "
             f"AND e.{identifier(RUN_ID.name)} = CAST(:run_id AS text)) "
             f"ORDER BY {column_list(log.key)}", run_id=run_id)
    return conn.row_count
