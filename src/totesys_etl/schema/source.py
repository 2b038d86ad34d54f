"""The eleven totesys tables the pipeline reads (contract §2), exactly as the source declares them."""
from __future__ import annotations

from totesys_etl.schema.model import Column, Table


def _table(name: str, *columns: Column) -> Table:
    key = f"{name}_id"
    return Table(
        name=name,
        kind="source",
        columns=(Column(key, "int"), *columns,
                 Column("created_at", "timestamp"), Column("last_updated", "timestamp")),
        key=(key,),
    )


def _v(name: str, nullable: bool = False, type_: str = "varchar") -> Column:
    return Column(name, type_, nullable)


def _i(name: str, nullable: bool = False) -> Column:
    return Column(name, "int", nullable)


SOURCE_TABLES: tuple[Table, ...] = (
    _table("address", _v("address_line_1"), _v("address_line_2", True), _v("district", True), _v("city"),
           _v("postal_code"), _v("country"), _v("phone")),
    _table("counterparty", _v("counterparty_legal_name"), _i("legal_address_id"),
           _v("commercial_contact", True), _v("delivery_contact", True)),
    _table("currency", _v("currency_code", type_="varchar(3)")),
    _table("department", _v("department_name"), _v("location", True), _v("manager", True)),
    _table("design", _v("design_name"), _v("file_location"), _v("file_name")),
    _table("staff", _v("first_name"), _v("last_name"), _i("department_id"), _v("email_address")),
    _table("payment_type", _v("payment_type_name")),
    _table("sales_order", _i("design_id"), _i("staff_id"), _i("counterparty_id"), _i("units_sold"),
           Column("unit_price", "numeric(10,2)"), _i("currency_id"), _v("agreed_delivery_date"),
           _v("agreed_payment_date"), _i("agreed_delivery_location_id")),
    _table("purchase_order", _i("staff_id"), _i("counterparty_id"), _v("item_code"), _i("item_quantity"),
           Column("item_unit_price", "numeric"), _i("currency_id"), _v("agreed_delivery_date"),
           _v("agreed_payment_date"), _i("agreed_delivery_location_id")),
    _table("transaction", _v("transaction_type"), _i("sales_order_id", True), _i("purchase_order_id", True)),
    _table("payment", _i("transaction_id"), _i("counterparty_id"), Column("payment_amount", "numeric"),
           _i("currency_id"), _i("payment_type_id"), Column("paid", "boolean"), _v("payment_date"),
           _i("company_ac_number"), _i("counterparty_ac_number")),
)

#: Foreign keys of the source (table, column) -> referenced table, for the generator's DDL.
SOURCE_FOREIGN_KEYS: dict[tuple[str, str], str] = {
    ("counterparty", "legal_address_id"): "address",
    ("staff", "department_id"): "department",
    ("sales_order", "design_id"): "design",
    ("sales_order", "staff_id"): "staff",
    ("sales_order", "counterparty_id"): "counterparty",
    ("sales_order", "currency_id"): "currency",
    ("sales_order", "agreed_delivery_location_id"): "address",
    ("purchase_order", "staff_id"): "staff",
    ("purchase_order", "counterparty_id"): "counterparty",
    ("purchase_order", "currency_id"): "currency",
    ("purchase_order", "agreed_delivery_location_id"): "address",
    ("transaction", "sales_order_id"): "sales_order",
    ("transaction", "purchase_order_id"): "purchase_order",
    ("payment", "transaction_id"): "transaction",
    ("payment", "counterparty_id"): "counterparty",
    ("payment", "currency_id"): "currency",
    ("payment", "payment_type_id"): "payment_type",
}

_BY_NAME = {t.name: t for t in SOURCE_TABLES}


def source_table(name: str) -> Table:
    """The declaration of a source table; KeyError for a name that is not one of the eleven."""
    return _BY_NAME[name]
