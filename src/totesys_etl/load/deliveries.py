"""Courier events into their fact (contract §3 `fact_delivery`, §9): one row per `event_id`, ever.

An event is not a version of a source row: a courier file re-sent under another name, a file taken
twice by two pick-ups, an event repeated within a file or a replayed run all carry events already
stored, and each must change nothing. Loaded in run order, the first run that carries an event
wins. Runs may be loaded out of order (contract §3 "Order"), and an event re-sent with other values
(a courier's correction, two files carrying it) must still end as an in-order load leaves it: so a
run older than the stored row's `etl_run_id` that carries the event with different values replaces
them, with its run id. Nothing else rewrites a stored row: a replay, a later run, or an older run
carrying the same values changes no surrogate key and no `etl_run_id`.
"""
from __future__ import annotations

from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection
from totesys_etl.load.files import temp_name
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import RUN_ID


def insert_events(conn: Connection, fact: Table, run_id: str) -> int:
    """Store the run's events: those whose `event_id` the fact does not hold yet are inserted, and
    a stored row a later run wrote takes this run's values if they differ; rows written.

    Within the run, an id that appears more than once is taken once (DISTINCT ON, ordered by every
    column, so a replay chooses the same row). UPDATE first, so that the rows it compares are all
    from earlier loads. `NOT EXISTS` before inserting, not `ON CONFLICT`, so events already stored
    draw no serial values (contract §3: a replay changes no surrogate key); the loaders' advisory
    lock makes this the only writer.
    """
    names = [c.name for c in fact.data_columns]
    key, run = identifier(fact.version_key[0]), identifier(RUN_ID.name)
    target, tmp = identifier(fact.name), identifier(temp_name(fact))
    order = ", ".join(f"t.{identifier(c)}" for c in names)
    events = f"(SELECT DISTINCT ON (t.{key}) t.* FROM {tmp} AS t ORDER BY {order})"  # nosec B608 - declared names
    sets = ", ".join(f"{identifier(c)} = n.{identifier(c)}" for c in names)
    old, new = (", ".join(f"{alias}.{identifier(c)}" for c in names) for alias in ("f", "n"))
    conn.run(f"UPDATE {target} AS f SET {sets}, {run} = :run_id FROM {events} AS n "  # nosec B608 - declared names
             f"WHERE f.{key} = n.{key} AND f.{run} > :run_id AND ({old}) IS DISTINCT FROM ({new})", run_id=run_id)
    updated = conn.row_count
    conn.run(f"INSERT INTO {target} ({column_list([*names, RUN_ID.name])}) "  # nosec B608 - declared names
             f"SELECT {column_list(names)}, CAST(:run_id AS text) FROM {events} AS n "
             f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS f WHERE f.{key} = n.{key}) "
             f"ORDER BY n.{key}", run_id=run_id)
    return updated + conn.row_count
