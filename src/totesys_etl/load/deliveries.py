"""Courier events into their fact (contract §3 `fact_delivery`, §9): one row per `event_id`, ever.

An event is not a version of a source row: a courier file re-sent under another name, a file taken
twice by two pick-ups, an event repeated within a file or a replayed run all carry events already
stored, and each must change nothing. So a run's events are only ever inserted, and only those
whose `event_id` is absent: the first run loaded that carries an event wins, and no stored row is
ever rewritten (no surrogate key, no `etl_run_id` moves).
"""
from __future__ import annotations

from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection
from totesys_etl.load.files import temp_name
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import RUN_ID


def insert_events(conn: Connection, fact: Table, run_id: str) -> int:
    """Insert the run's events whose `event_id` the fact does not hold yet; rows inserted.

    Within the run, an id that appears more than once is taken once (DISTINCT ON, ordered by every
    column, so a replay chooses the same row). `NOT EXISTS` before inserting, not `ON CONFLICT`,
    so events already stored draw no serial values (contract §3: a replay changes no surrogate
    key); the loaders' advisory lock makes this the only writer.
    """
    names = [c.name for c in fact.data_columns]
    key = identifier(fact.version_key[0])
    target, tmp = identifier(fact.name), identifier(temp_name(fact))
    order = ", ".join(f"t.{identifier(c)}" for c in names)
    conn.run(f"INSERT INTO {target} ({column_list([*names, RUN_ID.name])}) "  # nosec B608 - declared names
             f"SELECT {column_list(names)}, CAST(:run_id AS text) FROM "
             f"(SELECT DISTINCT ON (t.{key}) t.* FROM {tmp} AS t ORDER BY {order}) AS n "
             f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS f WHERE f.{key} = n.{key}) "
             f"ORDER BY n.{key}", run_id=run_id)
    return conn.row_count
