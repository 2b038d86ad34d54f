from datetime import date, time
from decimal import Decimal

from pg8000.native import identifier

from totesys_etl.schema import FACTS, SOURCE_TABLES, star_table
from totesys_etl.schema.ddl import create_table
from totesys_etl.schema.derive import derived_select


def test_derived_rows_join_split_and_parse(source, run_sql):
    for table in SOURCE_TABLES:
        run_sql(source.admin_url, create_table(table))
    run_sql(source.admin_url, "INSERT INTO department VALUES (1, 'Sales', NULL, 'M', now(), now())")
    run_sql(source.admin_url, "INSERT INTO staff VALUES (7, 'Zoë', 'O''Neil', 1, 'z@x', now(), now())")
    run_sql(source.admin_url, "INSERT INTO staff VALUES (8, 'No', 'Dept', 99, 'n@x', now(), now())")
    rows = run_sql(source.admin_url, derived_select(star_table("dim_staff"), identifier))
    assert rows == [[7, "Zoë", "O'Neil", "Sales", None, "z@x"]]  # the inner join waits for department 99

    run_sql(source.admin_url, "INSERT INTO sales_order VALUES (1, 2, 7, 3, 10, 3.50, 1, '2024-01-31', "
                              "'2024-02-01', 4, '2024-01-02 03:04:05.678', '2024-01-03 10:00:00.001')")
    fact = next(f for f in FACTS if f.name == "fact_sales_order")
    (row,) = run_sql(source.admin_url, derived_select(fact, identifier))
    assert row == [1, date(2024, 1, 2), time(3, 4, 5, 678000), date(2024, 1, 3), time(10, 0, 0, 1000), 7, 3, 10,
                   Decimal("3.50"), 1, 2, date(2024, 2, 1), date(2024, 1, 31), 4]
