"""Table and column declarations, and the one mapping from PostgreSQL types to Arrow types.

A `Table` is data: its name, key, columns and, for warehouse tables, where each column comes
from. Adding a column to the warehouse means adding one `Column` to `warehouse.py`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

#: Unconstrained `numeric` travels as decimal128(38, 10): 20 integer digits, 10 places (contract §3).
UNCONSTRAINED_NUMERIC = (38, 10)

_NUMERIC = re.compile(r"numeric\((\d+),\s*(\d+)\)")

#: The one character PostgreSQL's text types cannot hold: COPY refuses a value with it ("invalid byte
#: sequence for encoding "UTF8": 0x00", SQLSTATE 22021), so one such value would make the loader
#: refuse its whole file. Where text comes in (courier events, the processor's rows), it holds back
#: the row it is in.
NUL = "\x00"


def nul_reason(column: str) -> str:
    """A held-back row's reason for a NUL in `column`: the same words wherever it is found."""
    return f"{column} holds a NUL character"


def arrow_type(pg_type: str) -> pa.DataType:
    """The Arrow type that carries a PostgreSQL column exactly (never a float for money)."""
    import pyarrow as pa  # here, not at the top: the ingest reads declarations but never Arrow (0.18 s of start-up)

    base = pg_type.split("(")[0]
    if base in ("int", "serial"):
        return pa.int32()
    if base == "varchar" or base == "text":
        return pa.string()
    if base == "boolean":
        return pa.bool_()
    if base == "date":
        return pa.date32()
    if base == "time":
        return pa.time64("us")
    if base == "timestamp":
        return pa.timestamp("us")
    if pg_type == "numeric":
        return pa.decimal128(*UNCONSTRAINED_NUMERIC)
    match = _NUMERIC.fullmatch(pg_type)
    if match:
        return pa.decimal128(int(match.group(1)), int(match.group(2)))
    raise ValueError(f"no Arrow type declared for PostgreSQL type {pg_type!r}")


@dataclass(frozen=True)
class Column:
    """One column.

    `source` names the source column a warehouse column derives from: a column of the table's
    own source (`"created_at"`) or of a joined one (`"department.location"`). `derive` says how:
    `copy`, `date_of` / `time_of` (split a timestamp), `parse_date` ('YYYY-MM-DD' text to a date).
    """

    name: str
    type: str
    nullable: bool = False
    source: str | None = None
    derive: str = "copy"

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(self.type)

    @property
    def source_table(self) -> str | None:
        """The joined table this column comes from, or None for the table's own source."""
        return self.source.split(".")[0] if self.source and "." in self.source else None

    @property
    def source_column(self) -> str | None:
        return self.source.split(".")[-1] if self.source else None


@dataclass(frozen=True)
class Join:
    """A dimension attribute drawn from another table: `local` in the primary row = `remote` there.

    `required` joins are inner joins: the dimension row appears once the joined row has arrived
    (runs may come out of order). Optional joins are left joins (a lookup that may miss).
    """

    table: str
    local: str
    remote: str
    required: bool = True


@dataclass(frozen=True)
class Table:
    """A table of the source, the star schema or the loader's bookkeeping.

    `kind` is one of `source`, `dimension`, `fact`, `date`, `state`. For facts, `version_key`
    is the unique (source id, last_updated) pair that makes a replay harmless.
    """

    name: str
    kind: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    source: str | None = None
    joins: tuple[Join, ...] = ()
    version_key: tuple[str, ...] = ()
    description: str = ""
    #: (column, `table.key`) a fact refers to besides dimensions and dates (say, a sales order).
    references: tuple[tuple[str, str], ...] = ()
    _by_name: dict = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return self._by_name[name]

    @property
    def data_columns(self) -> tuple[Column, ...]:
        """Every column but a surrogate `serial` key: what the lake's Parquet carries."""
        return tuple(c for c in self.columns if c.type != "serial")

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Parquet schema of this table in the lake (surrogate keys are the warehouse's)."""
        import pyarrow as pa  # see arrow_type

        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.data_columns])
