"""The one declaration of every table the pipeline touches: source, star schema, bookkeeping.

Nothing here does I/O. The processor, loader, reconcile, DDL and docs read these objects instead
of repeating column lists.
"""
from totesys_etl.schema.cdc import DELETE_LOGS, DELETED_ROW
from totesys_etl.schema.courier import EVENT_FACTS, FILE_SOURCES
from totesys_etl.schema.fx import API_FACTS, FACT_EXCHANGE_RATE, FX_RATE
from totesys_etl.schema.model import Column, Join, Table
from totesys_etl.schema.source import SOURCE_TABLES, source_table
from totesys_etl.schema.warehouse import (DIMENSIONS, DIM_DATE, FACTS, STAR_TABLES, STATE_TABLES, fact_references,
                                          star_table, state_table)

#: Every table an ingest manifest may name: the eleven totesys tables, the FX rates and the courier
#: events (contract §9), and the deletes change data capture reads (§10).
INGESTED_TABLES: tuple[Table, ...] = (*SOURCE_TABLES, FX_RATE, *FILE_SOURCES, DELETED_ROW)
_INGESTED_BY_NAME = {t.name: t for t in INGESTED_TABLES}


def ingested_table(name: str) -> Table:
    """The declaration of a table an ingest manifest names; KeyError for any other name."""
    return _INGESTED_BY_NAME[name]


__all__ = ["Column", "Join", "Table", "SOURCE_TABLES", "source_table", "DIMENSIONS", "DIM_DATE",
           "FACTS", "STAR_TABLES", "STATE_TABLES", "fact_references", "star_table", "state_table",
           "API_FACTS", "FACT_EXCHANGE_RATE", "FX_RATE", "EVENT_FACTS", "FILE_SOURCES", "INGESTED_TABLES",
           "ingested_table", "DELETE_LOGS", "DELETED_ROW"]
