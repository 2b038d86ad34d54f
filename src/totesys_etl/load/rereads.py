"""The re-read ledger (schema/rereads.py): runs loaded out of order end where an in-order load
ends, for the facts whose stored rows a later run's different values replace (load/merge.py
`insert_fact_versions`, load/rates.py `merge_rates`).

The defect it closes: runs R1 < R2 < R3 carry x, y, x for one stored key and are loaded R1, R3, R2.
R3 brings the values stored, so it changes no row (contract §3: a row is rewritten only when its
values change, `etl_run_id` included) and the row still names R1; R2, later than R1 with other
values, then overwrote it with y, where an in-order load ends with x. R3 now records itself in the
ledger, and a merge compares a run with the row's *effective* run, the greater of its `etl_run_id`
and its ledger entry. In any load order, a key's effective run is then the latest loaded run that
carried it, and its values are that run's (test/load/test_merge.py and test_rates.py load every
script of four runs in all 24 orders). The row's own `etl_run_id` may differ from an in-order
load's: it names the run that stored the values, and the ledger names the later run that carried
them again. Moving it there without a change of values is what the contract forbids. One exception
keeps a fact id's current version (its greatest `etl_run_id`) right: `promote_rereads`.

Why a ledger: a column of the row would have to be written in exactly the case where the row must
not be rewritten, and reading older runs' files from the lake would make a load depend on them. The
ledger gets an entry only for a key that a later run carried again unchanged. The ingest drops the
versions it has shipped, except in a run that reads tables whole on purpose (after a restore or a
failover, a CDC snapshot: history.py `FULL_READS`). Entries are pruned once the loaders' low-water
mark passes them (`prune_rereads`), so the ledger holds only what runs above the mark carried again;
the mark trails the newest run by the sweeps' settle period (`TOTESYS_SETTLE_SECONDS`), or waits at
a run not loaded yet.

Cost. A merge adds a `count(*)` of its temp table and statements that read the ledger by its run
index alone: its latest entry, the entries later than the run (`promote_rereads`, facts with
versions only; rates have none) and those at or below the mark (`prune_rereads`). Only when the
latest entry is as late as the run (a later run was loaded first) does the merge's UPDATE check the
ledger row by row. It writes the ledger only when
its UPDATE and INSERT together wrote fewer rows than the run brought, i.e. when some row was stored
already and stays. A first load goes straight into empty tables, with no merge at all, and a run of
new versions writes every row, so neither touches the ledger per row. Measured in a test-sized run
(100,000 new payment versions merged into 100,000 stored ones, two cores under a load average of
6-8): the added statements took 25-40 ms of a 1.8-2.3 s merge, nearly all of it the `count(*)`.
Carrying all 100,000 again unchanged, as a whole re-read does, writes 100,000 entries: 1.6-2.7 s on
top of the merge's own 1.5-2.4 s.
"""
from __future__ import annotations

from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection
from totesys_etl.load.files import temp_name
from totesys_etl.load.ledger import MARK
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.model import Table
from totesys_etl.schema.rereads import reread_table, stored_key
from totesys_etl.schema.warehouse import RUN_ID


def _same(table: Table, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{identifier(c)} = {right}.{identifier(c)}" for c in stored_key(table))


def not_reread_since(conn: Connection, table: Table, row: str, run_id: str) -> str:
    """SQL, true unless the ledger holds a run at least as late as `:run_id` for the stored row `row`
    (an alias of `table`): with the row's own `etl_run_id < :run_id`, "this run is later than the
    row's effective run". Plain `TRUE` when the ledger holds no entry that late, which its latest
    entry tells (`max` reads one end of the run index): only a later run loaded before this one leaves
    such entries, so a load in order never reads the ledger per row."""
    ledger, run = identifier(reread_table(table.name).name), identifier(RUN_ID.name)
    latest = conn.run(f"SELECT max({run}) FROM {ledger}")[0][0]  # nosec B608 - declared names
    if latest is None or latest < run_id:
        return "TRUE"
    return (f"NOT EXISTS (SELECT 1 FROM {ledger} AS x WHERE {_same(table, 'x', row)} "  # nosec B608 - declared names
            f"AND x.{run} >= :run_id)")


def record_rereads(conn: Connection, table: Table, run_id: str, written: int) -> None:
    """Call after the merge's UPDATE and INSERT, which wrote `written` rows: the run's rows that match a
    stored row with an earlier `etl_run_id` and the same values go into the ledger under this run
    (kept only if later than an entry already there). Those are the rows the merge did not write, so
    when it wrote as many rows as the run brought there are none, and the ledger is not read at all."""
    tmp = identifier(temp_name(table))
    if conn.run(f"SELECT count(*) FROM {tmp}")[0][0] <= written:  # nosec B608 - declared names
        return
    ledger, target, run = identifier(reread_table(table.name).name), identifier(table.name), identifier(RUN_ID.name)
    key = stored_key(table)
    values = [c.name for c in table.data_columns if c.name not in key]
    old = ", ".join(f"f.{identifier(c)}" for c in values)
    new = ", ".join(f"t.{identifier(c)}" for c in values)
    conn.run(f"INSERT INTO {ledger} ({column_list([*key, RUN_ID.name])}) "  # nosec B608 - declared names
             f"SELECT DISTINCT {', '.join(f'f.{identifier(c)}' for c in key)}, CAST(:run_id AS text) "
             f"FROM {tmp} AS t JOIN {target} AS f ON {_same(table, 'f', 't')} "
             f"WHERE f.{run} < :run_id AND ({old}) IS NOT DISTINCT FROM ({new}) "
             f"ON CONFLICT ({column_list(key)}) DO UPDATE SET {run} = EXCLUDED.{run} "
             f"WHERE {ledger}.{run} < EXCLUDED.{run}", run_id=run_id)


def promote_rereads(conn: Connection, fact: Table, run_id: str) -> int:
    """Keep a fact id's current version right (the greatest `etl_run_id`; contract §3, "newer means
    committed later") once this run has written a version of the id. Another version of the id whose
    own `etl_run_id` is older than this run, but whose ledger entry is later, takes the entry's run
    into its row. An in-order load gave it that run too, when the later run read it again and the
    version had to stay current. Like that rewrite (`insert_fact_versions`), it moves `etl_run_id`
    alone, and only so that the current version stays right; it happens only when runs come out of
    order. Returns the rows so rewritten."""
    ledger, target, run = identifier(reread_table(fact.name).name), identifier(fact.name), identifier(RUN_ID.name)
    id_ = identifier(fact.version_key[0])
    conn.run(f"UPDATE {target} AS f SET {run} = x.{run} FROM {ledger} AS x "  # nosec B608 - declared names
             f"WHERE {_same(fact, 'f', 'x')} AND f.{run} < :run_id AND x.{run} > :run_id "
             f"AND EXISTS (SELECT 1 FROM {target} AS g WHERE g.{id_} = f.{id_} AND g.{run} = :run_id)",
             run_id=run_id)
    return conn.row_count


def prune_rereads(conn: Connection, table: Table) -> None:
    """Drop the ledger entries of runs at or below the loaders' low-water mark (`etl_load_mark`):
    every run up to the mark is loaded, so no run older than such an entry can still arrive, and
    the entry can neither stop one nor promote a version for one. An entry whose row itself names a
    run as late (a later run changed its values, or `promote_rereads` moved the run into it) says
    nothing the row does not; it does no harm, and goes the same way."""
    ledger = identifier(reread_table(table.name).name)
    conn.run(f"DELETE FROM {ledger} WHERE {identifier(RUN_ID.name)} <= "  # nosec B608 - declared names
             f"(SELECT run_id FROM {identifier(MARK)})")
