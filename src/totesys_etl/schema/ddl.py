"""CREATE TABLE statements generated from the declarations, identifiers quoted by pg8000.

Identifiers come only from the declarations in this package, never from input, and are still
quoted with `pg8000.native.identifier` so a future name cannot change the statement's meaning.
"""
from __future__ import annotations

from pg8000.native import identifier

from totesys_etl.schema.model import Table


def column_list(names) -> str:
    """A comma-separated, quoted column list."""
    return ", ".join(identifier(n) for n in names)


def column_definitions(columns) -> list[str]:
    """`"name" type [NOT NULL]` for each declared column."""
    return [f"{identifier(c.name)} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in columns]


def create_table(table: Table, name: str | None = None, if_not_exists: bool = True,
                 primary_key: bool = True, unlogged: bool = False) -> str:
    """`CREATE TABLE` for a declared table: its types, nullability and primary key.

    Facts also get their unique version key, which makes a replayed version a no-op.
    """
    parts = column_definitions(table.columns)
    if primary_key:
        parts.append(f"PRIMARY KEY ({column_list(table.key)})")
        if table.version_key:
            parts.append(f"UNIQUE ({column_list(table.version_key)})")
    exists = "IF NOT EXISTS " if if_not_exists else ""
    persistence = "UNLOGGED " if unlogged else ""
    return f"CREATE {persistence}TABLE {exists}{identifier(name or table.name)} (\n    " + ",\n    ".join(parts) + "\n)"
