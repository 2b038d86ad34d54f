"""Staging for a run loaded in parts (contract §4 "Parts"), declared once: what holds a part's rows
between the invocation that stages it and the one transaction that publishes the whole run.

Each table the loader loads (`LOADED_TABLES`) has a staging table `etl_stage_<table>`: the table's
lake columns (what its Parquet carries) after `etl_run_id` and `etl_part`, no keys, since one id
may come in several parts of a run. `STAGING_LEDGER` says which parts of which run are staged,
one row per (run, table, part), written in the part's own transaction with its rows: so a part is
staged exactly once however often it is asked for, and "every part staged" is a query. Both are
internal bookkeeping in the `public` schema with `etl_` names, never in `analytics`: nothing a reader
of the warehouse queries (star tables, views) reads them. Names come only from these declarations.
"""
from __future__ import annotations

from totesys_etl.schema.cdc import DELETE_LOGS
from totesys_etl.schema.courier import EVENT_FACTS
from totesys_etl.schema.fx import API_FACTS
from totesys_etl.schema.model import Column, Table
from totesys_etl.schema.warehouse import DIM_DATE, FACTS, RUN_ID, STATE_TABLES

#: Every table a processed manifest may name, so every table the loader loads and may stage.
LOADED_TABLES: tuple[Table, ...] = (*STATE_TABLES, *FACTS, DIM_DATE, *API_FACTS, *EVENT_FACTS, *DELETE_LOGS)

#: The part of the run a staged row came from (its number in the manifest, from 0).
PART = Column("etl_part", "int")


def _staging(table: Table) -> Table:
    return Table(name=f"etl_stage_{table.name}", kind="staging", columns=(RUN_ID, PART, *table.data_columns),
                 key=(), source=table.name,
                 description=f"Rows of `{table.name}` parts staged for runs not yet published (internal).")


#: table name -> its staging table.
STAGING_TABLES: dict[str, Table] = {t.name: _staging(t) for t in LOADED_TABLES}

STAGING_LEDGER = Table(
    name="etl_stage_ledger", kind="staging", key=("run_id", "table_name", "part"),
    columns=(Column("run_id", "text"), Column("table_name", "text"), Column("part", "int"), Column("rows", "int"),
             Column("quarantined", "boolean"), Column("staged_at", "timestamptz")),
    description="The parts staged for runs not yet published: one row per (run, table, part), written with the "
                "part's rows; `quarantined` when the part's file was held back instead (internal).",
)


def staging_table(name: str) -> Table:
    """The staging table of a loaded table (KeyError for any other name)."""
    return STAGING_TABLES[name]
