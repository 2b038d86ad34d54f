"""SQL that derives a warehouse table's rows from source-shaped relations, from the declaration.

The same declaration yields the loader's dimension rows (relations = its `etl_src_*` state
tables) and reconcile's expected rows (relations = the source's own tables), so the derivation
is written once. `relation(name)` maps a source (or reference) table name to the SQL relation
that stands for it; it must return trusted SQL (an identifier() or a constant expression).
"""
from __future__ import annotations

from typing import Callable

from pg8000.native import identifier

from totesys_etl.schema.model import Column, Table

PRIMARY = "p"


def _alias(join_table: str) -> str:
    return identifier(f"j_{join_table}")


def expression(column: Column) -> str:
    """The SQL expression for one warehouse column over the primary row `p` and its joins."""
    table = column.source_table
    ref = f"{_alias(table) if table else PRIMARY}.{identifier(column.source_column)}"
    if column.derive == "copy":
        return ref
    if column.derive == "date_of":
        return f"({ref})::date"
    if column.derive == "time_of":
        return f"({ref})::time"
    if column.derive == "parse_date":
        return f"({ref})::date"
    raise ValueError(f"unknown derivation {column.derive!r} for {column.name}")


def derived_select(table: Table, relation: Callable[[str], str], where: str = "") -> str:
    """`SELECT <warehouse columns> FROM <primary source> p JOIN …` for a dimension or fact.

    Required joins are inner (the row appears once its joined row exists), others left joins.
    """
    columns = ", ".join(f"{expression(c)} AS {identifier(c.name)}" for c in table.data_columns)
    sql = f"SELECT {columns} FROM {relation(table.source)} AS {PRIMARY}"  # nosec B608
    for join in table.joins:
        kind = "JOIN" if join.required else "LEFT JOIN"
        sql += (f" {kind} {relation(join.table)} AS {_alias(join.table)}"
                f" ON {_alias(join.table)}.{identifier(join.remote)} = {PRIMARY}.{identifier(join.local)}")
    return sql + (f" WHERE {where}" if where else "")
