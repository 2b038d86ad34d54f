"""The merge statements on their own, against a real warehouse: the paths a whole run rarely takes."""
from datetime import date, datetime, time
from decimal import Decimal

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url, transaction
from totesys_etl.load import merge
from totesys_etl.load.files import create_temp_sql, temp_name
from totesys_etl.load.migrations import migrate
from totesys_etl.schema import star_table, state_table
from totesys_etl.schema.ddl import column_list

PAYMENT = star_table("fact_payment")


@pytest.fixture
def conn(warehouse_url):
    connection = pg8000.native.Connection(**parse_url(warehouse_url))
    migrate(connection)
    yield connection
    connection.close()


def _payment(payment_id: int, updated: time, amount: str) -> dict:
    return {"payment_id": payment_id, "created_date": date(2024, 1, 2), "created_time": time(9, 0),
            "last_updated_date": date(2024, 1, 2), "last_updated_time": updated, "transaction_id": 7,
            "counterparty_id": 3, "payment_amount": Decimal(amount), "currency_id": 1, "payment_type_id": 2,
            "paid": False, "payment_date": date(2024, 2, 1)}


def _stage(conn, table, rows: list[dict]) -> None:
    conn.run(create_temp_sql(table))
    names = [c.name for c in table.data_columns]
    for row in rows:
        conn.run(f"INSERT INTO {temp_name(table)} ({column_list(names)}) "
                 f"VALUES ({', '.join(':' + n for n in names)})", **{n: row[n] for n in names})


def test_a_fact_file_that_repeats_a_version_stores_it_once_and_the_run_goes_on(conn):
    with transaction(conn):
        _stage(conn, PAYMENT, [_payment(1, time(9, 0), "1.50"), _payment(1, time(9, 0), "1.50"),
                               _payment(1, time(10, 0), "2.00"), _payment(2, time(9, 0), "3.25")])
        assert merge.insert_fact_versions(conn, PAYMENT) == 3
        conn.run("SELECT 1")  # the transaction is still usable after the fallback
    rows = conn.run("SELECT payment_id, last_updated_time, payment_amount FROM fact_payment ORDER BY 1, 2")
    assert rows == [[1, time(9, 0), Decimal("1.50")], [1, time(10, 0), Decimal("2.00")],
                    [2, time(9, 0), Decimal("3.25")]]


def test_fact_versions_already_stored_are_skipped_without_drawing_serials(conn):
    with transaction(conn):
        _stage(conn, PAYMENT, [_payment(1, time(9, 0), "1.50")])
        assert merge.insert_fact_versions(conn, PAYMENT) == 1
    before = conn.run("SELECT payment_record_id FROM fact_payment")
    with transaction(conn):
        _stage(conn, PAYMENT, [_payment(1, time(9, 0), "1.50"), _payment(1, time(11, 0), "4.00")])
        assert merge.insert_fact_versions(conn, PAYMENT) == 1
    ids = [r[0] for r in conn.run("SELECT payment_record_id FROM fact_payment ORDER BY 1")]
    assert ids == [before[0][0], before[0][0] + 1]


def _staff(staff_id: int, name: str, updated: datetime, department_id: int = 1) -> dict:
    return {"staff_id": staff_id, "first_name": name, "last_name": "Smith", "department_id": department_id,
            "email_address": f"{name}@t.com", "created_at": datetime(2024, 1, 1), "last_updated": updated}


def _department(department_id: int, name: str, updated: datetime) -> dict:
    return {"department_id": department_id, "department_name": name, "location": "Leeds", "manager": None,
            "created_at": datetime(2024, 1, 1), "last_updated": updated}


def _merge_run(conn, staff: list[dict], departments: list[dict]) -> dict[str, int]:
    with transaction(conn):
        _stage(conn, state_table("staff"), staff)
        _stage(conn, state_table("department"), departments)
        counts = {"etl_src_staff": merge.merge_state(conn, state_table("staff")),
                  "etl_src_department": merge.merge_state(conn, state_table("department"))}
        counts["dim_staff"] = merge.merge_dimension(conn, star_table("dim_staff"), {"staff", "department"})
    return counts


def test_state_keeps_the_newest_version_and_the_dimension_changes_only_what_differs(conn):
    t1, t2, t3 = datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11)
    first = _merge_run(conn, [_staff(1, "Ann", t1), _staff(1, "Anne", t2), _staff(2, "Bob", t1)],
                       [_department(1, "Sales", t1)])
    assert first == {"etl_src_staff": 2, "etl_src_department": 1, "dim_staff": 2}
    untouched = conn.run("SELECT xmin::text FROM dim_staff WHERE staff_id = 2")[0][0]

    # An older version of staff 1 arrives late, staff 2 repeats as it was, the department is renamed.
    second = _merge_run(conn, [_staff(1, "Annie", t1), _staff(2, "Bob", t1)], [_department(1, "Sales UK", t3)])
    assert second == {"etl_src_staff": 0, "etl_src_department": 1, "dim_staff": 2}
    assert conn.run("SELECT staff_id, first_name, department_name FROM dim_staff ORDER BY 1") == [
        [1, "Anne", "Sales UK"], [2, "Bob", "Sales UK"]]

    third = _merge_run(conn, [_staff(2, "Bob", t1)], [_department(1, "Sales UK", t3)])
    assert third == {"etl_src_staff": 0, "etl_src_department": 0, "dim_staff": 0}
    assert conn.run("SELECT xmin::text FROM dim_staff WHERE staff_id = 2")[0][0] != untouched  # changed in run 2
    kept = conn.run("SELECT xmin::text FROM dim_staff ORDER BY staff_id")
    _merge_run(conn, [_staff(1, "Anne", t2)], [])
    assert conn.run("SELECT xmin::text FROM dim_staff ORDER BY staff_id") == kept  # same values: no rewrite
