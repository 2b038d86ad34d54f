"""Deleted source rows (contract §10 "Deletes"), declared once: what the CDC ingest lands and what
the warehouse keeps.

`DELETED_ROW` is the lake's CSV of one run's deletes (`ingest/cdc/run.py`): the table, the id and
the delete's commit time in UTC. `ETL_DELETED_ROW` is contract §10's warehouse table, plus the run
that read the delete (`etl_run_id`). A row counts as deleted while its newest delete was read by a
later run than its newest version (run ids follow commit order): so a row inserted again with the
same id is current again, whatever order the runs are loaded in, and the table is only ever
inserted into. `deleted_after` is that rule as SQL, for the analytics views and `reconcile`.
"""
from __future__ import annotations

from totesys_etl.schema.model import Column, Table

DELETED_ROW = Table(
    name="deleted_row", kind="source", key=("source_table", "source_id"),
    columns=(Column("source_table", "varchar"), Column("source_id", "int"), Column("deleted_at", "timestamp")),
    description="Source rows a CDC run saw deleted: table, id, and the delete's commit time in UTC.",
)

ETL_DELETED_ROW = Table(
    name="etl_deleted_row", kind="deletes", key=("source_table", "source_id"), source=DELETED_ROW.name,
    columns=(Column("source_table", "varchar", source="source_table"), Column("source_id", "int", source="source_id"),
             Column("deleted_at", "timestamp", source="deleted_at")),
    description="Rows deleted in the source (change data capture only), one per delete and run that read it "
                "(`etl_run_id`). An id is deleted while its newest delete is newer than its newest version; "
                "the dimension row stays, since facts refer to it.",
)

#: Warehouse tables that record deletes (kept apart from facts: not versions of a row).
DELETE_LOGS: tuple[Table, ...] = (ETL_DELETED_ROW,)


def deleted_after(source_table: str, source_id: str, version_run_id: str) -> str:
    """SQL that is true when the id `source_id` (an SQL expression) of `source_table` has a delete
    read by a later run than `version_run_id` (the SQL expression of its newest version's run)."""
    from pg8000.native import identifier, literal  # here: the processor imports the declarations, not pg8000

    return (f"EXISTS (SELECT 1 FROM public.{identifier(ETL_DELETED_ROW.name)} d "  # nosec B608 - declared names
            f"WHERE d.source_table = {literal(source_table)} AND d.source_id = {source_id} "
            f"AND d.etl_run_id > coalesce({version_run_id}, ''))")
