"""A run's deleted source rows into `etl_deleted_row` (contract §10 "Deletes", schema/cdc.py).

Only ever inserted, one row per (table, id, run): a replay finds its rows there and inserts
nothing. Whether an id is deleted now is derived where it is read (`schema.cdc.deleted_after`),
from the newest delete against the newest version, so a delete loaded after a newer re-insert
(runs out of order) never hides the row.
"""
from __future__ import annotations

from datetime import datetime

from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection
from totesys_etl.load.files import temp_name
from totesys_etl.schema.cdc import deleted_after
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import FACTS, RUN_ID, STATE_TABLES


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


#: Lake tables whose absent ids can mean deletes: the state and fact tables of the eleven source tables.
ABSENCE_CHECKED = frozenset(t.name for t in (*STATE_TABLES, *FACTS))


def record_absent(conn: Connection, log: Table, table: Table, run_id: str, loaded: bool, direct: bool) -> int:
    """For a run that holds `table` whole (a CDC snapshot: `manifest.complete_tables`), record as
    deleted by this run every id the warehouse holds from an earlier run that the run's file lacks
    (no file: the table was empty); rows inserted. Called after the run's rows are loaded, while
    its temp table (`files.temp_name`) still holds them.

    Such a delete was committed before the snapshot, so `deleted_at` is the run's moment (an upper
    bound). An id already deleted, or with a version from a later run (inserted again since), is
    left alone; a replay inserts nothing. A file copied straight into an empty table (`direct`)
    leaves nothing earlier to compare.
    """
    if direct:
        return 0
    key = identifier(table.version_key[0] if table.kind == "fact" else table.key[0])
    run = identifier(RUN_ID.name)
    held = (f"AND NOT EXISTS (SELECT 1 FROM {identifier(temp_name(table))} AS r "  # nosec B608 - declared names
            f"WHERE r.{key} = v.id) " if loaded else "")
    moment = datetime.strptime(run_id, "%Y%m%dT%H%M%S%fZ")
    conn.run(f"INSERT INTO {identifier(log.name)} ({column_list([*log.column_names, RUN_ID.name])}) "  # nosec B608
             f"SELECT CAST(:source AS text), v.id, CAST(:at AS timestamp), CAST(:run_id AS text) "
             f"FROM (SELECT w.{key} AS id, max(w.{run}) AS run FROM {identifier(table.name)} AS w "
             f"GROUP BY w.{key}) AS v WHERE v.run < CAST(:run_id AS text) {held}"
             f"AND NOT {deleted_after(table.source, 'v.id', 'v.run')} ORDER BY v.id",
             source=table.source, at=moment, run_id=run_id)
    return conn.row_count
