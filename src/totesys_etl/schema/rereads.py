"""The loader's re-read ledger, declared once: for a stored row of a fact that a later run's different
values replace, the latest later run that carried the row again with the SAME values.

Such a run leaves the row as it is (contract §3: a row is rewritten only when its values change, and
that includes its `etl_run_id`), so the row still names an older run. Without a record of the later
run, a run between the two, loaded after both, would look newer than the row and overwrite it: runs
R1 < R2 < R3 carrying x, y, x and loaded R1, R3, R2 would end with R2's y where an in-order load ends
with x. `etl_reread_<table>` is that record: the row's stored key (a fact's version, a keyed fact's
key) and the run (`etl_run_id`). A row's *effective* run is the greater of its own `etl_run_id` and
its ledger entry's. The loader (load/rereads.py) writes an entry only in that rare case and drops
it once the loaders' low-water mark passes it, so the ledger stays small.
"""
from __future__ import annotations

from totesys_etl.schema.fx import API_FACTS
from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import FACTS, RUN_ID


def stored_key(table: Table) -> tuple[str, ...]:
    """The columns a run's row is matched with a stored row by: a fact's version (id, last_updated),
    a keyed fact's natural key (a rate's day and currency)."""
    return table.version_key or table.key


def _reread(table: Table) -> Table:
    key = stored_key(table)
    return Table(name=f"etl_reread_{table.name}", kind="reread", columns=(*(table.column(c) for c in key), RUN_ID),
                 key=key, source=table.name,
                 description=f"Rows of `{table.name}` that a run later than their `etl_run_id` carried again "
                             "with the same values, and the latest such run (internal).")


#: Facts whose stored rows a later run's different values replace (load/merge.py, load/rates.py) ->
#: their re-read ledger.
REREAD_TABLES: dict[str, Table] = {t.name: _reread(t) for t in (*FACTS, *API_FACTS)}


def reread_table(name: str) -> Table:
    """The re-read ledger of a fact (KeyError for a table that has none)."""
    return REREAD_TABLES[name]
