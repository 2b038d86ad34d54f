"""The one declaration of every table the pipeline touches: source, star schema, bookkeeping.

Nothing here does I/O. The processor, loader, reconcile, DDL and docs read these objects instead
of repeating column lists.
"""
from totesys_etl.schema.fx import API_FACTS, FACT_EXCHANGE_RATE, FX_RATE, INGESTED_TABLES, ingested_table
from totesys_etl.schema.model import Column, Join, Table
from totesys_etl.schema.source import SOURCE_TABLES, source_table
from totesys_etl.schema.warehouse import (DIMENSIONS, DIM_DATE, FACTS, STAR_TABLES, STATE_TABLES, fact_references,
                                          star_table, state_table)

__all__ = ["Column", "Join", "Table", "SOURCE_TABLES", "source_table", "DIMENSIONS", "DIM_DATE",
           "FACTS", "STAR_TABLES", "STATE_TABLES", "fact_references", "star_table", "state_table",
           "API_FACTS", "FACT_EXCHANGE_RATE", "FX_RATE", "INGESTED_TABLES", "ingested_table"]
