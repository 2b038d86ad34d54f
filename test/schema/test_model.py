from decimal import Decimal

import pyarrow as pa
import pytest

from totesys_etl.schema import DIMENSIONS, FACTS, SOURCE_TABLES, STATE_TABLES, source_table, star_table
from totesys_etl.schema.model import arrow_type
from totesys_etl.schema.warehouse import fact_references, state_table, warehouse_table


@pytest.mark.parametrize("pg_type, expected", [
    ("int", pa.int32()), ("serial", pa.int32()), ("varchar", pa.string()), ("varchar(3)", pa.string()),
    ("boolean", pa.bool_()), ("date", pa.date32()), ("time", pa.time64("us")),
    ("timestamp", pa.timestamp("us")), ("numeric", pa.decimal128(38, 10)), ("numeric(10,2)", pa.decimal128(10, 2)),
])
def test_arrow_types_carry_values_exactly(pg_type, expected):
    assert arrow_type(pg_type) == expected


def test_unknown_type_is_refused():
    with pytest.raises(ValueError):
        arrow_type("float8")


def test_unconstrained_numeric_holds_twenty_integer_digits_and_ten_places():
    value = Decimal("12345678901234567890.0123456789")
    assert pa.array([value], arrow_type("numeric")).to_pylist() == [value]


def test_the_eleven_source_tables_of_spec_section_2():
    assert [t.name for t in SOURCE_TABLES] == [
        "address", "counterparty", "currency", "department", "design", "staff", "payment_type", "sales_order",
        "purchase_order", "transaction", "payment"]
    for table in SOURCE_TABLES:
        assert table.key == (f"{table.name}_id",)
        assert table.column_names[-2:] == ["created_at", "last_updated"]
    nullable = {(t.name, c.name) for t in SOURCE_TABLES for c in t.columns if c.nullable}
    assert nullable == {("address", "address_line_2"), ("address", "district"),
                        ("counterparty", "commercial_contact"), ("counterparty", "delivery_contact"),
                        ("department", "location"), ("department", "manager"),
                        ("transaction", "sales_order_id"), ("transaction", "purchase_order_id")}


def test_warehouse_nullability_follows_the_source():
    assert star_table("dim_staff").column("location").nullable
    assert star_table("dim_counterparty").column("counterparty_legal_address_line_2").nullable
    assert not star_table("dim_counterparty").column("counterparty_legal_city").nullable
    assert star_table("dim_currency").column("currency_name").nullable
    assert star_table("dim_transaction").column("sales_order_id").nullable


def test_every_warehouse_column_derives_from_a_declared_source_column():
    for table in (*DIMENSIONS, *FACTS):
        for column in table.data_columns:
            source = column.source_table or table.source
            if source == "etl_currency_name":
                continue
            assert column.source_column in source_table(source).column_names, (table.name, column.name)


def test_facts_keep_versions_and_reference_dimensions():
    for fact in FACTS:
        assert fact.columns[0].type == "serial"
        assert fact.version_key == (f"{fact.source}_id", "last_updated_date", "last_updated_time")
        assert fact.columns[0].name not in fact.arrow_schema.names
        for column, target in fact_references(fact).items():
            dim, key = target.split(".")
            assert key in warehouse_table(dim).column_names, (fact.name, column)


def test_state_tables_cover_every_table_dimensions_draw_on():
    assert {t.source for t in STATE_TABLES} == {
        "address", "counterparty", "currency", "department", "design", "payment_type", "staff", "transaction"}
    assert state_table("department").column_names == source_table("department").column_names


def test_star_table_refuses_bookkeeping_names():
    with pytest.raises(KeyError):
        star_table("etl_src_address")
