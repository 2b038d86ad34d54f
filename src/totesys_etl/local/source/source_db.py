"""The eleven source tables as `seed` and `load_snapshot` build them: bare tables first, the bulk
load, then primary keys, foreign keys, one `last_updated` index per table, sequences past the
highest id, ANALYZE and the read-only role's grant (indexes built once over loaded rows are
several times faster than maintained row by row)."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Iterable, Iterator, Sequence

from pg8000.native import DatabaseError, identifier, literal

from totesys_etl.adapters.postgres import Connection, connect
from totesys_etl.config import Database
from totesys_etl.errors import EtlError, describe
from totesys_etl.schema import SOURCE_TABLES, source_table
from totesys_etl.schema.ddl import column_list, create_table
from totesys_etl.schema.source import SOURCE_FOREIGN_KEYS


def admin_connect(admin_url: str, command: str) -> Connection:
    """The source's owner, as `seed`, `simulate` and `load_snapshot` work through it: no statement
    timeout (a large seed's bulk load and index builds run for minutes)."""
    return connect(Database("source", admin_url, ""), statement_timeout=None, application_name=f"totesys-etl {command}")


@contextmanager
def source_errors(action: str) -> Iterator[None]:
    """A refused statement (e.g. a read-only role given as the admin URL) as a one-line EtlError.

    The server's message names the object and the privilege, never the connection's password.
    """
    try:
        yield
    except DatabaseError as e:
        raise EtlError(f"{action} failed: {describe(e)}") from None


def _id_column(table) -> str:
    return table.key[0]


def _sequence_name(table) -> str:
    return f"{table.name}_{_id_column(table)}_seq"


def prepare_session(conn: Connection) -> None:
    """Settings for one bulk-loading transaction: ISO dates (the generator casts dates to text)
    and enough memory that index builds sort in memory."""
    conn.run("SET LOCAL datestyle = 'ISO, YMD'")
    conn.run("SET LOCAL maintenance_work_mem = '256MB'")
    conn.run("SET LOCAL work_mem = '64MB'")
    conn.run("SET LOCAL synchronous_commit = off")


def create_source_tables(conn: Connection) -> None:
    """Drop the eleven tables and create them bare, as contract §2 declares them, ids `serial`.

    Keys, foreign keys and indexes come after the load (`finish_source_tables`): building them
    once over loaded rows is several times faster than maintaining them row by row.
    """
    conn.run("DROP TABLE IF EXISTS " + column_list(t.name for t in SOURCE_TABLES) + " CASCADE")
    for table in SOURCE_TABLES:
        conn.run(create_table(table, if_not_exists=False, primary_key=False))
        # `serial` by hand: the declaration says `int`, which is what a serial column is.
        sequence, name, key = identifier(_sequence_name(table)), identifier(table.name), identifier(_id_column(table))
        conn.run(f"CREATE SEQUENCE {sequence} AS integer OWNED BY {name}.{key}")
        conn.run(f"ALTER TABLE {name} ALTER COLUMN {key} SET DEFAULT nextval({literal(sequence)}::regclass)")


def finish_source_tables(conn: Connection, reader_role: str | None = None) -> dict[str, int]:
    """Keys, foreign keys, `last_updated` indexes, sequences, statistics and the reader's grant.

    Returns the row count of each table. `reader_role` defaults to the role `up` creates; the
    grant is skipped when no such role exists (a database the caller set up itself).
    """
    from totesys_etl.local.services.admin import READER_ROLE

    counts = {}
    for table in SOURCE_TABLES:
        name, key = identifier(table.name), identifier(_id_column(table))
        conn.run(f"ALTER TABLE {name} ADD PRIMARY KEY ({key})")
        conn.run(f"CREATE INDEX {identifier(table.name + '_last_updated_idx')} ON {name} (last_updated)")
        counts[table.name] = conn.run(f"SELECT count(*) FROM {name}")[0][0]  # nosec B608 - declared names
        conn.run(f"SELECT setval(pg_get_serial_sequence(:table, :column), coalesce(max({key}), 0) + 1, false) "
                 f"FROM {name}", table=name, column=_id_column(table))  # nosec B608 - declared names
    for (table, column), referenced in SOURCE_FOREIGN_KEYS.items():
        conn.run(f"ALTER TABLE {identifier(table)} ADD FOREIGN KEY ({identifier(column)}) "
                 f"REFERENCES {identifier(referenced)} ({identifier(_id_column(source_table(referenced)))})")
    for table in SOURCE_TABLES:
        conn.run(f"ANALYZE {identifier(table.name)}")
    role = reader_role or READER_ROLE
    if conn.run("SELECT 1 FROM pg_roles WHERE rolname = :role", role=role):
        conn.run(f"GRANT SELECT ON {column_list(t.name for t in SOURCE_TABLES)} TO {identifier(role)}")
    from totesys_etl.local.source.cdc import tables_recreated

    tables_recreated(conn)  # contract §10: where `up` prepared change data capture
    return counts


def csv_rows(rows: Iterable[Sequence]) -> bytes:
    """Header-less CSV for `copy_in`: NULL is an unquoted empty field, every string is quoted.

    So NULL and '' stay apart, and quotes, commas and newlines inside text survive.
    """
    def field(value) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "t" if value else "f"
        if isinstance(value, datetime):
            return value.isoformat(sep=" ", timespec="milliseconds")
        if isinstance(value, str):
            return '"' + value.replace('"', '""') + '"'
        return str(value)

    return "".join(",".join(field(v) for v in row) + "\n" for row in rows).encode()
