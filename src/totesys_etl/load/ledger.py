"""The loader's bookkeeping in the warehouse: which runs are loaded, and the sweep's mark.

The ledger row is written in the same transaction as the run's data (as dlt's `_dlt_loads`), so
"loaded" and "in the ledger" can never disagree, whatever crashes in between.
"""
from __future__ import annotations

import json
from typing import Iterable

from totesys_etl.adapters.postgres import Connection

#: The key of the loaders' session advisory lock (b"totesysL" as a signed 64-bit integer).
#: Every loader takes it before the migrations; reconcile or tools may take it to see a quiet warehouse.
LOADER_LOCK_KEY = int.from_bytes(b"totesysL", "big", signed=True)

LEDGER = "etl_load_ledger"
MARK = "etl_load_mark"


def loaded_runs(conn: Connection, run_ids: Iterable[str] | None = None, after: str | None = None) -> set[str]:
    """The run ids in the ledger: all of them, those of `run_ids`, or those after run `after`.

    Raises pg8000's DatabaseError (undefined_table) before the first migration.
    """
    if run_ids is not None:
        wanted = sorted(set(run_ids))
        if not wanted:
            return set()
        rows = conn.run("SELECT run_id FROM etl_load_ledger WHERE run_id = ANY(CAST(:ids AS text[]))", ids=wanted)
    elif after is not None:
        rows = conn.run("SELECT run_id FROM etl_load_ledger WHERE run_id > :after", after=after)
    else:
        rows = conn.run("SELECT run_id FROM etl_load_ledger")
    return {r[0] for r in rows}


def is_loaded(conn: Connection, run_id: str) -> bool:
    return bool(conn.run("SELECT 1 FROM etl_load_ledger WHERE run_id = :run_id", run_id=run_id))


def record_run(conn: Connection, run_id: str, rows: dict[str, int]) -> None:
    """Add the run to the ledger; call inside the run's transaction (a duplicate raises)."""
    conn.run("INSERT INTO etl_load_ledger (run_id, loaded_at, rows) VALUES (:run_id, now(), CAST(:rows AS jsonb))",
             run_id=run_id, rows=json.dumps(rows, sort_keys=True))


def load_mark(conn: Connection) -> str | None:
    """The sweep's low-water mark: every run up to it is loaded (None before the first).

    Raises pg8000's DatabaseError (undefined_table) before the first migration.
    """
    rows = conn.run("SELECT run_id FROM etl_load_mark")
    return rows[0][0] if rows else None


def set_mark(conn: Connection, run_id: str) -> None:
    """Move the mark forward to `run_id` (never back: a slower sweep cannot undo a faster one)."""
    conn.run("INSERT INTO etl_load_mark (singleton, run_id) VALUES (true, :run_id) "
             "ON CONFLICT (singleton) DO UPDATE SET run_id = EXCLUDED.run_id "
             "WHERE etl_load_mark.run_id < EXCLUDED.run_id", run_id=run_id)
