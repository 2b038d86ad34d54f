"""The star schema (contract §3) and the loader's per-row source state, declared once.

Dimensions are derived from *state*: the current row of every source table a dimension draws
on, kept by the loader in `etl_src_<table>` and replaced only by the version a later run read
(contract §3: newer means committed later, not stamped later). A dimension row is then a join over
state, so it ends current whatever order runs arrive in
(readme_files/adr/0002-dimensions-from-source-state.md).

State and fact rows also carry `etl_run_id`, the run that read the version: a bookkeeping
column of the warehouse only (not in the lake's Parquet, so not a declared column).
"""
from __future__ import annotations

from totesys_etl.schema.model import Column, Join, Table
from totesys_etl.schema.source import source_table


def _c(name: str, type_: str = "int", source: str | None = None, nullable: bool = False,
       derive: str = "copy") -> Column:
    return Column(name, type_, nullable, source if source is not None else name, derive)


def _dimension(name: str, source: str, *columns: Column, joins: tuple[Join, ...] = (),
               description: str = "") -> Table:
    return Table(name=name, kind="dimension", columns=columns, key=(columns[0].name,), source=source,
                 joins=joins, description=description)


def _fact(name: str, source: str, record_id: str, *columns: Column, description: str = "") -> Table:
    source_id = f"{source}_id"
    stamps = (_c("created_date", "date", "created_at", derive="date_of"),
              _c("created_time", "time", "created_at", derive="time_of"),
              _c("last_updated_date", "date", "last_updated", derive="date_of"),
              _c("last_updated_time", "time", "last_updated", derive="time_of"))
    return Table(name=name, kind="fact",
                 columns=(Column(record_id, "serial"), _c(source_id), *stamps, *columns),
                 key=(record_id,), source=source,
                 version_key=(source_id, "last_updated_date", "last_updated_time"),
                 description=description)


def _date(name: str, source: str) -> Column:
    return _c(name, "date", source, derive="parse_date")


DIM_DATE = Table(
    name="dim_date", kind="date", key=("date_id",),
    columns=(Column("date_id", "date"), Column("year", "int"), Column("month", "int"), Column("day", "int"),
             Column("day_of_week", "int"), Column("day_name", "varchar"), Column("month_name", "varchar"),
             Column("quarter", "int")),
    description="One row per calendar date: every date a fact refers to, plus a seeded range.",
)

#: ISO 4217 names from pycountry, kept by the loader's migrations (a lookup, not source data).
CURRENCY_NAMES = Table(
    name="etl_currency_name", kind="reference", key=("currency_code",),
    columns=(Column("currency_code", "varchar"), Column("currency_name", "varchar")),
    description="English ISO 4217 currency names, filled from pycountry.",
)


def currency_names() -> dict[str, str]:
    """ISO 4217 code -> English name, as pycountry gives it (the rows of `etl_currency_name`)."""
    import pycountry

    return {c.alpha_3: c.name for c in sorted(pycountry.currencies, key=lambda c: c.alpha_3)}


#: Reference tables (kind "reference"): lookups the warehouse keeps itself, not source data. A
#: dimension may join one; the loader fills it in a migration; reconcile reads the same rows.
REFERENCE_TABLES: tuple[Table, ...] = (CURRENCY_NAMES,)


def reference_rows(table: Table) -> dict[str, list[str]]:
    """A reference table's rows as one list per column (what `unnest` takes), from its provider."""
    if table is CURRENCY_NAMES:
        names = currency_names()
        return {"currency_code": list(names), "currency_name": list(names.values())}
    raise KeyError(table.name)


def is_reference(name: str) -> bool:
    """True if `name` is a reference table rather than a source table a dimension draws on."""
    return any(t.name == name for t in REFERENCE_TABLES)


_ADDRESS_PARTS = ("address_line_1", "address_line_2", "district", "city", "postal_code", "country", "phone")
_NULLABLE_ADDRESS_PARTS = ("address_line_2", "district")

DIMENSIONS: tuple[Table, ...] = (
    _dimension("dim_staff", "staff",
               _c("staff_id"), _c("first_name", "varchar"), _c("last_name", "varchar"),
               _c("department_name", "varchar", "department.department_name"),
               _c("location", "varchar", "department.location", nullable=True),
               _c("email_address", "varchar"),
               joins=(Join("department", "department_id", "department_id"),),
               description="Staff with their department's name and location."),
    _dimension("dim_location", "address",
               _c("location_id", source="address_id"),
               *(_c(p, "varchar", nullable=p in _NULLABLE_ADDRESS_PARTS) for p in _ADDRESS_PARTS),
               description="Every address: delivery locations and counterparties' legal addresses."),
    _dimension("dim_design", "design",
               _c("design_id"), _c("design_name", "varchar"), _c("file_location", "varchar"),
               _c("file_name", "varchar")),
    _dimension("dim_currency", "currency",
               _c("currency_id"), _c("currency_code", "varchar(3)"),
               _c("currency_name", "varchar", "etl_currency_name.currency_name", nullable=True),
               joins=(Join("etl_currency_name", "currency_code", "currency_code", required=False),),
               description="Currencies with their English ISO 4217 name (NULL for an unknown code)."),
    _dimension("dim_counterparty", "counterparty",
               _c("counterparty_id"), _c("counterparty_legal_name", "varchar"),
               *(_c(f"counterparty_legal_{'phone_number' if p == 'phone' else p}", "varchar", f"address.{p}",
                    nullable=p in _NULLABLE_ADDRESS_PARTS) for p in _ADDRESS_PARTS),
               joins=(Join("address", "legal_address_id", "address_id"),),
               description="Counterparties with their legal address."),
    _dimension("dim_payment_type", "payment_type", _c("payment_type_id"), _c("payment_type_name", "varchar")),
    _dimension("dim_transaction", "transaction",
               _c("transaction_id"), _c("transaction_type", "varchar"),
               _c("sales_order_id", nullable=True), _c("purchase_order_id", nullable=True)),
)

FACTS: tuple[Table, ...] = (
    _fact("fact_sales_order", "sales_order", "sales_record_id",
          _c("sales_staff_id", source="staff_id"), _c("counterparty_id"), _c("units_sold"),
          _c("unit_price", "numeric(10,2)"), _c("currency_id"), _c("design_id"),
          _date("agreed_payment_date", "agreed_payment_date"),
          _date("agreed_delivery_date", "agreed_delivery_date"), _c("agreed_delivery_location_id"),
          description="One row per version (sales_order_id, last_updated) of a sales order."),
    _fact("fact_purchase_order", "purchase_order", "purchase_record_id",
          _c("staff_id"), _c("counterparty_id"), _c("item_code", "varchar"), _c("item_quantity"),
          _c("item_unit_price", "numeric"), _c("currency_id"),
          _date("agreed_delivery_date", "agreed_delivery_date"),
          _date("agreed_payment_date", "agreed_payment_date"), _c("agreed_delivery_location_id"),
          description="One row per version of a purchase order."),
    _fact("fact_payment", "payment", "payment_record_id",
          _c("transaction_id"), _c("counterparty_id"), _c("payment_amount", "numeric"), _c("currency_id"),
          _c("payment_type_id"), _c("paid", "boolean"), _date("payment_date", "payment_date"),
          description="One row per version of a payment."),
)

STAR_TABLES: tuple[Table, ...] = (DIM_DATE, *DIMENSIONS, *FACTS)

#: Which dimension key a fact column points at. Not enforced by constraints (contract §3: a load
#: never waits for another run's dimension rows); reconcile and the tests check that they resolve.
_FACT_REFERENCES = {
    "sales_staff_id": "dim_staff.staff_id", "staff_id": "dim_staff.staff_id",
    "counterparty_id": "dim_counterparty.counterparty_id", "currency_id": "dim_currency.currency_id",
    "design_id": "dim_design.design_id", "agreed_delivery_location_id": "dim_location.location_id",
    "transaction_id": "dim_transaction.transaction_id", "payment_type_id": "dim_payment_type.payment_type_id",
}


def fact_references(fact: Table) -> dict[str, str]:
    """Column -> `dim_table.key` for every key and date of a fact."""
    own = dict(fact.references)
    return {c.name: own.get(c.name) or ("dim_date.date_id" if c.type == "date" else _FACT_REFERENCES[c.name])
            for c in fact.columns if c.type == "date" or c.name in _FACT_REFERENCES or c.name in own}


def _state(source: str) -> Table:
    src = source_table(source)
    return Table(name=f"etl_src_{source}", kind="state", columns=src.columns, key=src.key, source=source,
                 description=f"The current row of source `{source}` (the version the latest run read).")


#: The run that read a state row's or a fact row's version. Run ids sort in time order (lake.RUN_ID),
#: so "read by a later run" is a text comparison, and never a comparison of `last_updated` stamps.
RUN_ID = Column("etl_run_id", "text")
#: The run id rows loaded before `etl_run_id` existed carry: older than any run, so any run's
#: version replaces them and, among them, the newest `last_updated` stays the current version.
OLDEST_RUN_ID = "00000000T000000000000Z"


def bookkeeping_columns(table: Table) -> tuple[Column, ...]:
    """The warehouse-only columns a table has after its declared ones (contract §3 allows `etl_` columns)."""
    return (RUN_ID,) if table.kind in ("state", "fact") else ()


def newest_first(fact: Table) -> tuple[str, ...]:
    """The columns that order a fact id's versions newest first (each DESC): the run that read the
    version, then its stamp (rows loaded before `etl_run_id` all share OLDEST_RUN_ID)."""
    return (RUN_ID.name, *fact.version_key[1:])


#: The source tables dimensions draw on, each kept current by the loader.
STATE_TABLES: tuple[Table, ...] = tuple(_state(s) for s in sorted(
    {d.source for d in DIMENSIONS} | {j.table for d in DIMENSIONS for j in d.joins if not is_reference(j.table)}))

_BY_NAME = {t.name: t for t in (*STAR_TABLES, *STATE_TABLES, *REFERENCE_TABLES)}


def star_table(name: str) -> Table:
    """A star-schema table's declaration (dimension, fact or dim_date)."""
    table = _BY_NAME[name]
    if table.kind not in ("dimension", "fact", "date"):
        raise KeyError(name)
    return table


def state_table(source: str) -> Table:
    """The loader's state table for a source table a dimension draws on."""
    return _BY_NAME[f"etl_src_{source}"]


def warehouse_table(name: str) -> Table:
    """Any table of the warehouse declared here (star, state or reference)."""
    return _BY_NAME[name]
