"""Versioned warehouse migrations, recorded in `etl_migrations` (contract §3: the loader creates
the schema if it is missing).

Each migration runs once, in one transaction with its `etl_migrations` row, so a crash leaves
either all of it or none. The loader calls `migrate` under its session advisory lock; `migrate`
also takes the same key as a transaction lock, so any other caller (reconcile, a tool) is safe
against a loader migrating at the same moment. A new schema change is a new entry in
`MIGRATIONS`, never an edit of an applied one.
"""
from __future__ import annotations

from typing import Callable

from pg8000.native import identifier, literal

from totesys_etl.adapters.postgres import Connection, transaction
from totesys_etl.load.ledger import LOADER_LOCK_KEY
from totesys_etl.schema import DIMENSIONS, FACTS, STAR_TABLES, STATE_TABLES, state_table
from totesys_etl.schema.ddl import column_definitions, column_list, create_table
from totesys_etl.schema.courier import EVENT_FACTS
from totesys_etl.schema.fx import FACT_EXCHANGE_RATE
from totesys_etl.schema.cdc import ETL_DELETED_ROW
from totesys_etl.schema.rereads import REREAD_TABLES
from totesys_etl.schema.staging import STAGING_LEDGER, STAGING_TABLES
from totesys_etl.schema.views import (create_delivery_views, create_fx_views, create_live_current_views,
                                      create_report_views, create_views)
from totesys_etl.schema.warehouse import (OLDEST_RUN_ID, RUN_ID, REFERENCE_TABLES, bookkeeping_columns, is_reference,
                                          reference_rows)

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS etl_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def _star_schema(conn: Connection) -> None:
    """contract §3 from the declarations, plus the loader's state, ledger, mark and currency names.

    Facts get no foreign-key constraints: a load never waits for another run's dimension rows
    (reconcile and the tests check that keys resolve). Each state table gets an index on the
    columns dimensions join through, so "rows whose joined row changed" is an index lookup.
    Strict `CREATE TABLE` (no IF NOT EXISTS): a warehouse that already holds other tables of
    these names fails loudly here instead of being loaded into with another shape.
    """
    for table in (*STAR_TABLES, *STATE_TABLES, *REFERENCE_TABLES):
        conn.run(create_table(table, if_not_exists=False))
    for dimension in DIMENSIONS:
        for join in dimension.joins:
            if is_reference(join.table):
                continue
            state = state_table(dimension.source).name
            conn.run(f"CREATE INDEX {identifier(f'{state}_{join.local}_idx')} "
                     f"ON {identifier(state)} ({identifier(join.local)})")
    conn.run("CREATE TABLE etl_load_ledger (run_id text PRIMARY KEY, loaded_at timestamptz NOT NULL, "
             "rows jsonb NOT NULL)")
    conn.run("CREATE TABLE etl_load_mark (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), "
             "run_id text NOT NULL)")
    for table in REFERENCE_TABLES:
        columns = reference_rows(table)
        arrays = ", ".join(f"CAST(:{c} AS varchar[])" for c in columns)  # declared column names
        conn.run(f"INSERT INTO {identifier(table.name)} ({column_list(list(columns))}) "  # nosec B608
                 f"SELECT * FROM unnest({arrays})", **columns)


def _run_ids(conn: Connection) -> None:
    """`etl_run_id` on every state and fact row: the run that read the version (contract §3, "newer
    means committed later"). Rows already there get OLDEST_RUN_ID, so any run replaces them and,
    among themselves, `last_updated` still orders them. A constant default is catalogue-only in
    PostgreSQL 11+ (no table rewrite); it is dropped after, so every later row names its run.
    """
    for table in (*STATE_TABLES, *FACTS):
        for column in bookkeeping_columns(table):
            name = identifier(table.name)
            conn.run(f"ALTER TABLE {name} ADD COLUMN {column_definitions([column])[0]} "
                     f"DEFAULT {literal(OLDEST_RUN_ID)}")
            conn.run(f"ALTER TABLE {name} ALTER COLUMN {identifier(column.name)} DROP DEFAULT")


def _exchange_rates(conn: Connection) -> None:
    """contract §3 `fact_exchange_rate` (primary key (rate_date, currency_id)) with `etl_run_id`, the run
    that stored a row's value (load/rates.py), and the view of sales in GBP (schema/views.py)."""
    conn.run(create_table(FACT_EXCHANGE_RATE, if_not_exists=False))
    for column in bookkeeping_columns(FACT_EXCHANGE_RATE):
        conn.run(f"ALTER TABLE {identifier(FACT_EXCHANGE_RATE.name)} ADD COLUMN {column_definitions([column])[0]}")
    create_fx_views(conn)


def _deliveries(conn: Connection) -> None:
    """contract §3 `fact_delivery` (courier events, §9) with its `etl_run_id`, the run that first
    carried each event, and the on-time delivery view over it (schema/views.py DELIVERY_VIEWS)."""
    for table in EVENT_FACTS:
        conn.run(create_table(table, if_not_exists=False))
        for column in bookkeeping_columns(table):
            conn.run(f"ALTER TABLE {identifier(table.name)} ADD COLUMN {column_definitions([column])[0]}")
    create_delivery_views(conn)


def _deleted_rows(conn: Connection) -> None:
    """contract §10 `etl_deleted_row` (only ever inserted: one row per table, id and run that read the
    delete; load/deletes.py), and the current-version views leaving deleted ids out (schema/cdc.py)."""
    table = identifier(ETL_DELETED_ROW.name)
    conn.run(create_table(ETL_DELETED_ROW, if_not_exists=False, primary_key=False))
    conn.run(f"ALTER TABLE {table} ADD COLUMN {column_definitions([RUN_ID])[0]}")
    conn.run(f"ALTER TABLE {table} ADD PRIMARY KEY ({column_list([*ETL_DELETED_ROW.key, RUN_ID.name])})")
    create_live_current_views(conn)


def _staging(conn: Connection) -> None:
    """The staging tables of a run loaded in parts and their ledger (schema/staging.py, load/parts.py).

    UNLOGGED, all of them: a part's rows are written once more when the run is published, so
    writing them to the WAL when staged too would only double the cost. A crash of the server
    empties every unlogged table at once, the ledger with the rows it describes, so "staged" and
    the rows never disagree: the parts are simply staged again. No keys on the staging tables (an
    id may come in two parts of a run); the ledger's key is what makes a part staged only once.
    """
    for table in (*STAGING_TABLES.values(), STAGING_LEDGER):  # created so: SET UNLOGGED rewrites each table
        conn.run(create_table(table, if_not_exists=False, primary_key=table is STAGING_LEDGER, unlogged=True))


def _rereads(conn: Connection) -> None:
    """The re-read ledgers (schema/rereads.py, load/rereads.py): for a stored fact row, a later run that
    carried it again with the same values, so that a run between them, loaded last, cannot win. Indexed
    by run: the loader reads only entries later than the run it loads, and prunes those below the mark."""
    for table in REREAD_TABLES.values():
        conn.run(create_table(table, if_not_exists=False))
        conn.run(f"CREATE INDEX {identifier(f'{table.name}_run_idx')} ON {identifier(table.name)} "
                 f"({identifier(RUN_ID.name)})")


#: (version, name, apply). Append only.
MIGRATIONS: tuple[tuple[int, str, Callable[[Connection], None]], ...] = (
    (1, "star schema, loader state, ledger, mark, currency names", _star_schema),
    (2, "etl_run_id on state and fact rows: commit order, not stamps", _run_ids),
    (3, "analytical views in schema analytics, each reading facts' current versions", create_views),
    (4, "fact_exchange_rate and the view of sales in GBP (FX rates API)", _exchange_rates),
    (5, "fact_delivery from courier files, and the on-time delivery view", _deliveries),
    (6, "the report's views in GBP: purchases, months, customers, designs, countries, payments outstanding",
     create_report_views),
    (7, "etl_deleted_row (change data capture's deletes); current-version views leave deleted ids out",
     _deleted_rows),
    (8, "staging tables and their ledger for runs loaded in parts (contract §4 Parts), unlogged", _staging),
    (9, "etl_reread_<fact>: a later run that carried a stored row again unchanged (runs x, y, x out of order)",
     _rereads),
)


def applied_versions(conn: Connection) -> set[int]:
    """Versions recorded in `etl_migrations` (empty if the table does not exist yet)."""
    if conn.run("SELECT to_regclass('etl_migrations')")[0][0] is None:
        return set()
    return {r[0] for r in conn.run("SELECT version FROM etl_migrations")}


def migrate(conn: Connection) -> list[int]:
    """Apply every migration not yet applied, in order; the versions applied by this call.

    Up to date costs one short query and takes no lock, so a no-op load stays fast.
    """
    wanted = {version for version, _, _ in MIGRATIONS}
    if wanted <= applied_versions(conn):
        return []
    applied = []
    with transaction(conn):
        conn.run("SELECT pg_advisory_xact_lock(:key)", key=LOADER_LOCK_KEY)
        conn.run(_MIGRATIONS_TABLE)
        done = applied_versions(conn)
        for version, name, apply in MIGRATIONS:
            if version in done:
                continue
            apply(conn)
            conn.run("INSERT INTO etl_migrations (version, name, applied_at) VALUES (:v, :n, now())",
                     v=version, n=name)
            applied.append(version)
    return applied
