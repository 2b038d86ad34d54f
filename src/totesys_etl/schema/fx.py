"""The FX rates source (contract §3 `fact_exchange_rate`, §9 "FX rates API"), declared once.

The ingestor lands the API's rates as `fx_rate` CSVs (§4 layout, one row per day and currency,
carried days filled in); the processor turns them into `fact_exchange_rate` Parquet and the loader
keeps one row per (rate_date, currency_id). The rate travels as text, then `numeric`, never a float:
`units_per_gbp` is how many units of the currency one GBP buys, exactly as the API publishes it.
"""
from __future__ import annotations

from totesys_etl.schema.model import Column, Table

#: The day-by-day rows one ingest run fetched, as its lake CSV names them.
FX_RATE = Table(
    name="fx_rate", kind="source", key=("rate_date", "currency_id"),
    columns=(Column("rate_date", "date"), Column("currency_id", "int"), Column("units_per_gbp", "numeric"),
             Column("carried", "boolean")),
    description="Daily GBP-based rates from the FX API, one row per day and currency (carried days included).",
)

FACT_EXCHANGE_RATE = Table(
    name="fact_exchange_rate", kind="fact", key=("rate_date", "currency_id"), source=FX_RATE.name,
    columns=(Column("rate_date", "date", source="rate_date"), Column("currency_id", "int", source="currency_id"),
             Column("units_per_gbp", "numeric", source="units_per_gbp"),
             Column("carried", "boolean", source="carried")),
    description="One row per day and currency: how many units of the currency one GBP buys, exactly as the FX "
                "API published it (GBP itself 1). `carried`: a day with no published rate (a weekend, a "
                "holiday) takes the last published one.",
)

#: Facts from further sources (contract §9): keyed by their own natural key, not by source versions.
API_FACTS: tuple[Table, ...] = (FACT_EXCHANGE_RATE,)
