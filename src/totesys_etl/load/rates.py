"""`fact_exchange_rate` merged from a run's temp table (contract §3, §9): one row per (rate_date, currency_id).

Rates are not versions of a source row, so they are keyed by their natural key, not by
(id, last_updated). The rule, which keeps "exactly once" (contract §3) without a history:
- a key not stored yet is inserted, with the run that brought it (`etl_run_id`);
- a stored key is replaced only by a run LATER than the row's effective run (run ids sort in time
  order) whose values DIFFER (the API revised a rate, or a day once carried is now published); the
  effective run is the row's `etl_run_id`, or a later run that fetched the same values, which the
  re-read ledger records (load/rereads.py);
- anything else changes nothing: a replay (the same run), an older run loaded late, a later run that
  fetched the same values (recorded in the ledger, not in the row), and a concurrent tick (loaders
  serialise on their advisory lock).
So no row, and no `etl_` column, is rewritten unless its values change, and whatever order runs are
loaded in, a key ends with the values of the latest run that carried it: runs R1 < R2 < R3 bringing
x, y, x (a rate revised, then revised back) and loaded R1, R3, R2 end with x, as in order. The row's
`etl_run_id` is then R1 where an in-order load has R3 (R3 changed the values there); the ledger holds
R3. (Normally each key comes from one run only: each run asks from the day after the previous run's
newest stored day.)
"""
from __future__ import annotations

from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection
from totesys_etl.load import rereads
from totesys_etl.load.files import temp_name
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import RUN_ID


def merge_rates(conn: Connection, table: Table, run_id: str) -> int:
    """Fold the run's rows of a keyed fact into it (see the module docstring); rows inserted or changed."""
    names = [c.name for c in table.data_columns]
    values = [n for n in names if n not in table.key]
    target, tmp, run = identifier(table.name), identifier(temp_name(table)), identifier(RUN_ID.name)
    same = " AND ".join(f"f.{identifier(k)} = t.{identifier(k)}" for k in table.key)
    sets = ", ".join(f"{identifier(c)} = t.{identifier(c)}" for c in values)
    old = ", ".join(f"f.{identifier(c)}" for c in values)
    new = ", ".join(f"t.{identifier(c)}" for c in values)
    conn.run(f"UPDATE {target} AS f SET {sets}, {run} = :run_id FROM {tmp} AS t "  # nosec B608 - declared names
             f"WHERE {same} AND f.{run} < :run_id AND {rereads.not_reread_since(conn, table, 'f', run_id)} "
             f"AND ({old}) IS DISTINCT FROM ({new})", run_id=run_id)
    changed = conn.row_count
    conn.run(f"INSERT INTO {target} ({column_list([*names, RUN_ID.name])}) "  # nosec B608 - declared names
             f"SELECT DISTINCT ON ({', '.join(f't.{identifier(k)}' for k in table.key)}) "
             f"{', '.join(f't.{identifier(c)}' for c in names)}, CAST(:run_id AS text) FROM {tmp} AS t "
             f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS f WHERE {same}) "
             f"ORDER BY {', '.join(f't.{identifier(k)}' for k in table.key)}", run_id=run_id)
    changed += conn.row_count
    rereads.record_rereads(conn, table, run_id, changed)
    rereads.prune_rereads(conn, table)
    return changed
