"""The DBA's one-off steps for change data capture (contract §10), as `up` and the tests run them.

readme_files/cdc.md gives the same steps for RDS. They need the tables' owner (or a superuser):
- each of the eleven tables gets REPLICA IDENTITY FULL, so an update's old row carries a TOASTed
  value the update left unchanged (ingest/cdc/fold.py takes it from there);
- a publication over exactly the eleven tables;
- a `pgoutput` slot, created after the tables exist (its first read lines up with the first snapshot);
- a `LOGIN REPLICATION` role with `SELECT` on the eleven tables and nothing else.
All of it is idempotent, so `up` may run it every time.
"""
from __future__ import annotations

from pg8000.native import identifier, literal

from totesys_etl.adapters.postgres import Connection
from totesys_etl.ingest.cdc.slot import checked_name
from totesys_etl.schema import SOURCE_TABLES

CDC_ROLE = "totesys_cdc"
#: The slot's and the publication's default name (contract §10).
DEFAULT_NAME = "totesys_etl"


def _tables() -> str:
    return ", ".join(f"public.{identifier(t.name)}" for t in SOURCE_TABLES)


def prepare_tables(conn: Connection, publication: str) -> None:
    """REPLICA IDENTITY FULL on the eleven tables and the publication over them (re-run after
    `seed` recreates the tables: a dropped table leaves its publication)."""
    checked_name("publication", publication)
    for table in SOURCE_TABLES:
        conn.run(f"ALTER TABLE public.{identifier(table.name)} REPLICA IDENTITY FULL")
    if conn.run("SELECT 1 FROM pg_publication WHERE pubname = :name", name=publication):
        conn.run(f"ALTER PUBLICATION {identifier(publication)} SET TABLE {_tables()}")
    else:
        conn.run(f"CREATE PUBLICATION {identifier(publication)} FOR TABLE {_tables()}")


def create_slot(conn: Connection, slot: str) -> bool:
    """Create the `pgoutput` slot in the connection's database unless it exists; True if created."""
    checked_name("slot", slot)
    if conn.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :slot", slot=slot):
        return False
    conn.run("SELECT pg_create_logical_replication_slot(:slot, 'pgoutput')", slot=slot)
    return True


def drop_slot(conn: Connection, slot: str) -> None:
    conn.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :slot",
             slot=slot)


def grant_cdc_role(conn: Connection, database: str, password: str, role: str = CDC_ROLE,
                   with_tables: bool = True) -> None:
    """A `LOGIN REPLICATION` role that may read the eleven tables and nothing else (`with_tables`
    False: the tables do not exist yet; `tables_recreated` grants once `seed` made them)."""
    role_q = identifier(role)
    conn.run(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal(role)}) THEN "  # nosec B608
             f"CREATE ROLE {role_q} LOGIN REPLICATION; END IF; END $$")
    conn.run(f"ALTER ROLE {role_q} LOGIN REPLICATION PASSWORD {literal(password)} NOSUPERUSER NOCREATEDB NOCREATEROLE")
    conn.run(f"GRANT CONNECT ON DATABASE {identifier(database)} TO {role_q}")
    conn.run(f"GRANT USAGE ON SCHEMA public TO {role_q}")
    if with_tables:
        conn.run(f"GRANT SELECT ON {_tables()} TO {role_q}")


def _existing(conn: Connection) -> list[str]:
    rows = conn.run("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(CAST(:names AS text[]))",
                    names=[t.name for t in SOURCE_TABLES])
    return [r[0] for r in rows]


def tables_recreated(conn: Connection, role: str = CDC_ROLE, publication: str = DEFAULT_NAME) -> None:
    """After `seed` recreated the eleven tables (as their owner, in its transaction): where `up`
    prepared CDC (the role or the publication exists), the new tables get their identity, their
    place in the publication and the role's SELECT again. Elsewhere nothing happens."""
    if conn.run("SELECT 1 FROM pg_publication WHERE pubname = :name", name=publication):
        prepare_tables(conn, publication)
    if conn.run("SELECT 1 FROM pg_roles WHERE rolname = :role", role=role):
        conn.run(f"GRANT SELECT ON {_tables()} TO {identifier(role)}")


def prepare_local(conn: Connection, database: str, password: str) -> None:
    """`up` in cdc mode (`TOTESYS_SOURCE_MODE=cdc`), as the superuser on the source database: the
    role, the slot, and the publication once the tables exist (else `seed` makes it)."""
    grant_cdc_role(conn, database, password, with_tables=len(_existing(conn)) == len(SOURCE_TABLES))
    if len(_existing(conn)) == len(SOURCE_TABLES):
        prepare_tables(conn, DEFAULT_NAME)
    else:
        conn.run(f"DROP PUBLICATION IF EXISTS {identifier(DEFAULT_NAME)}")
        conn.run(f"CREATE PUBLICATION {identifier(DEFAULT_NAME)}")  # tables added by `seed`
    create_slot(conn, DEFAULT_NAME)
