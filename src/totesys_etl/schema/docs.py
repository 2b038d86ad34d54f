"""The data dictionary (readme_files/data-dictionary.md), generated from the declarations.

`python -m totesys_etl.schema.docs > readme_files/data-dictionary.md`; a test keeps it current.
"""
from __future__ import annotations

from totesys_etl.schema import API_FACTS, DIMENSIONS, DIM_DATE, EVENT_FACTS, FACTS, STATE_TABLES, fact_references
from totesys_etl.schema.model import Table
from totesys_etl.schema.rereads import REREAD_TABLES
from totesys_etl.schema.staging import STAGING_LEDGER
from totesys_etl.schema.views import DELIVERY_VIEWS, FX_VIEWS, REPORT_VIEWS, SCHEMA, VIEWS

_DERIVATIONS = {"copy": "", "date_of": " (date part)", "time_of": " (time part)",
                "parse_date": " ('YYYY-MM-DD' text as a date)"}


def _origin(table: Table, column) -> str:
    if not column.source:
        return "surrogate key (serial)" if column.type == "serial" else "derived from the date"
    where = column.source if column.source_table else f"{table.source}.{column.source}"
    return f"`{where}`{_DERIVATIONS[column.derive]}"


def _section(table: Table) -> list[str]:
    lines = [f"### `{table.name}`", ""]
    if table.description:
        lines += [table.description, ""]
    key = ", ".join(table.key)
    lines.append(f"Key: `{key}`" + (f"; unique version: `({', '.join(table.version_key)})`" if table.version_key
                                    else ""))
    for join in table.joins:
        lines.append(f"Joins `{join.table}` on `{table.source}.{join.local} = {join.table}.{join.remote}`"
                     f" ({'inner' if join.required else 'left'}).")
    references = fact_references(table) if table.kind == "fact" else {}
    lines += ["", "| column | type | null | from | refers to |", "|---|---|---|---|---|"]
    for c in table.columns:
        lines.append(f"| {c.name} | {c.type} | {'yes' if c.nullable else 'no'} | {_origin(table, c)} | "
                     f"{references.get(c.name, '')} |")
    return lines + [""]


def render() -> str:
    lines = ["# Data dictionary", "",
             "Generated from `src/totesys_etl/schema/` by `python -m totesys_etl.schema.docs`; do not edit.", "",
             "Facts keep one row per source version; their keys into dimensions are not enforced by constraints "
             "(contract §3), `totesys-etl reconcile` checks that they resolve. Fact and state tables also carry "
             "`etl_run_id` (text), the run that read the version: a fact id's current version is the one with "
             "the greatest `etl_run_id`, then the greatest `last_updated` (newer means committed later, not "
             "stamped later).", "", "## Dimensions", ""]
    for table in (DIM_DATE, *DIMENSIONS):
        lines += _section(table)
    lines += ["## Facts", ""]
    for table in FACTS:
        lines += _section(table)
    lines += ["## Facts from further sources (contract §9)", "",
              "Keyed by their own natural key, not by source versions. `fact_exchange_rate` (FX API): a row "
              "changes only when a later run brings different values (load/rates.py). `fact_delivery` "
              "(courier files): one row per `event_id`, inserted once whatever is re-sent (load/deliveries.py). "
              "They carry `etl_run_id` too: the run that stored the row's values.", ""]
    for table in (*API_FACTS, *EVENT_FACTS):
        lines += _section(table)
    lines += ["## Loader state (bookkeeping)", "",
              "The current row of each source table a dimension draws on, with `etl_run_id`, the run that read "
              "it; a row is replaced only by the version a later run read (never by comparing `last_updated`), "
              "so runs loaded out of order never make a dimension older.", ""]
    lines += [f"- `{t.name}`: the columns of source `{t.source}`" for t in STATE_TABLES]
    lines += ["", "A later run that carries a stored fact or rate row again with the same values leaves the row "
              "as it is and is recorded in the fact's re-read ledger, so that a run between the two, loaded "
              "after both, does not overwrite the row (load/rereads.py); entries go once the loaders' "
              "low-water mark passes them.", ""]
    lines += [f"- `{t.name}`: `{', '.join(t.key)}` of `{t.source}`, and `etl_run_id`" for t in REREAD_TABLES.values()]
    lines += ["", "## Staging of runs loaded in parts (internal)", "",
              "A run whose processed manifest lists a table in parts (contract §4 \"Parts\") is staged part by "
              f"part, then published in one transaction that empties its staging rows (load/parts.py). "
              f"`{STAGING_LEDGER.name}` holds one row per staged part (`run_id`, `table_name`, `part`, `rows`, "
              "`quarantined`, `staged_at`); each loaded table has a staging table `etl_stage_<table>` with its "
              "lake columns after `etl_run_id` and `etl_part`. They are unlogged, empty whenever no run is "
              f"half staged, outside the `{SCHEMA}` schema, and no view or star table reads them: a reader of "
              "the warehouse never sees a staged row."]
    lines += ["", f"## Analytical views (schema `{SCHEMA}`)", "",
              "Created by the loader's migrations for BI tools and `totesys-etl report`. Each reads the current "
              "version of each fact through the `current_*` views (greatest `etl_run_id`, then greatest "
              "`last_updated_date, last_updated_time`); money is added across currencies only in GBP, through "
              "`fact_exchange_rate`, and each GBP sum says what it could not value.", "",
              "| view | answers |", "|---|---|"]
    every = (*VIEWS, *FX_VIEWS, *DELIVERY_VIEWS, *REPORT_VIEWS)
    lines += [f"| `{SCHEMA}.{v.name}` | {v.description} |" for v in every]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
