"""The merge statements on their own, against a real warehouse: the paths a whole run rarely takes."""
import itertools
from datetime import date, datetime, time
from decimal import Decimal

import pytest

from totesys_etl.adapters.postgres import transaction
from totesys_etl.load import merge
from totesys_etl.load.files import create_temp_sql, temp_name
from totesys_etl.schema import star_table, state_table
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.rereads import reread_table
from totesys_etl.schema.warehouse import newest_first

PAYMENT = star_table("fact_payment")


@pytest.fixture
def conn(migrated):
    return migrated


def _payment(payment_id: int, updated: time, amount: str) -> dict:
    return {"payment_id": payment_id, "created_date": date(2024, 1, 2), "created_time": time(9, 0),
            "last_updated_date": date(2024, 1, 2), "last_updated_time": updated, "transaction_id": 7,
            "counterparty_id": 3, "payment_amount": Decimal(amount), "currency_id": 1, "payment_type_id": 2,
            "paid": False, "payment_date": date(2024, 2, 1)}


def _stage(conn, table, rows: list[dict]) -> None:
    """The run's rows into the temp table the loader fills from a file, in one statement."""
    conn.run(create_temp_sql(table))
    names = [c.name for c in table.data_columns]
    arrays = ", ".join(f"CAST(:{c.name} AS {c.type}[])" for c in table.data_columns)
    conn.run(f"INSERT INTO {temp_name(table)} ({column_list(names)}) SELECT * FROM unnest({arrays})",
             **{n: [row[n] for row in rows] for n in names})


R1, R2, R3 = "20241114T100001000000Z", "20241114T100002000000Z", "20241114T100003000000Z"


def test_a_fact_file_that_repeats_a_version_stores_it_once_and_the_run_goes_on(conn):
    with transaction(conn):
        _stage(conn, PAYMENT, [_payment(1, time(9, 0), "1.50"), _payment(1, time(9, 0), "1.50"),
                               _payment(1, time(10, 0), "2.00"), _payment(2, time(9, 0), "3.25")])
        assert merge.insert_fact_versions(conn, PAYMENT, R1) == 3
        conn.run("SELECT 1")  # the transaction is still usable after the fallback
    rows = conn.run("SELECT payment_id, last_updated_time, payment_amount FROM fact_payment ORDER BY 1, 2")
    assert rows == [[1, time(9, 0), Decimal("1.50")], [1, time(10, 0), Decimal("2.00")],
                    [2, time(9, 0), Decimal("3.25")]]


def test_fact_versions_already_stored_are_skipped_without_drawing_serials(conn):
    with transaction(conn):
        _stage(conn, PAYMENT, [_payment(1, time(9, 0), "1.50")])
        assert merge.insert_fact_versions(conn, PAYMENT, R1) == 1
    before = conn.run("SELECT payment_record_id FROM fact_payment")
    with transaction(conn):
        _stage(conn, PAYMENT, [_payment(1, time(9, 0), "1.50"), _payment(1, time(11, 0), "4.00")])
        assert merge.insert_fact_versions(conn, PAYMENT, R2) == 1
    ids = [r[0] for r in conn.run("SELECT payment_record_id FROM fact_payment ORDER BY 1")]
    assert ids == [before[0][0], before[0][0] + 1]


def _staff(staff_id: int, name: str, updated: datetime, department_id: int = 1) -> dict:
    return {"staff_id": staff_id, "first_name": name, "last_name": "Smith", "department_id": department_id,
            "email_address": f"{name}@t.com", "created_at": datetime(2024, 1, 1), "last_updated": updated}


def _department(department_id: int, name: str, updated: datetime) -> dict:
    return {"department_id": department_id, "department_name": name, "location": "Leeds", "manager": None,
            "created_at": datetime(2024, 1, 1), "last_updated": updated}


def _merge_run(conn, staff: list[dict], departments: list[dict], run_id: str) -> dict[str, int]:
    with transaction(conn):
        _stage(conn, state_table("staff"), staff)
        _stage(conn, state_table("department"), departments)
        counts = {"etl_src_staff": merge.merge_state(conn, state_table("staff"), run_id),
                  "etl_src_department": merge.merge_state(conn, state_table("department"), run_id)}
        counts["dim_staff"] = merge.merge_dimension(conn, star_table("dim_staff"), {"staff", "department"})
    return counts


def test_state_keeps_the_newest_version_and_the_dimension_changes_only_what_differs(conn):
    t1, t2, t3 = datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11)
    first = _merge_run(conn, [_staff(1, "Ann", t1), _staff(1, "Anne", t2), _staff(2, "Bob", t1)],
                       [_department(1, "Sales", t1)], R2)
    assert first == {"etl_src_staff": 2, "etl_src_department": 1, "dim_staff": 2}
    untouched = conn.run("SELECT xmin::text FROM dim_staff WHERE staff_id = 2")[0][0]

    # An older run loaded late: its version of staff 1 never wins, whatever its stamp.
    late = _merge_run(conn, [_staff(1, "Annie", t3)], [], R1)
    assert late == {"etl_src_staff": 0, "etl_src_department": 0, "dim_staff": 0}
    # A later run: staff 2 repeats as it was, the department is renamed.
    second = _merge_run(conn, [_staff(2, "Bob", t1)], [_department(1, "Sales UK", t3)], R3)
    assert second == {"etl_src_staff": 0, "etl_src_department": 1, "dim_staff": 2}
    assert conn.run("SELECT staff_id, first_name, department_name FROM dim_staff ORDER BY 1") == [
        [1, "Anne", "Sales UK"], [2, "Bob", "Sales UK"]]

    third = _merge_run(conn, [_staff(2, "Bob", t1)], [_department(1, "Sales UK", t3)], R3)
    assert third == {"etl_src_staff": 0, "etl_src_department": 0, "dim_staff": 0}
    assert conn.run("SELECT xmin::text FROM dim_staff WHERE staff_id = 2")[0][0] != untouched  # changed in run 3
    kept = conn.run("SELECT xmin::text FROM dim_staff ORDER BY staff_id")
    _merge_run(conn, [_staff(1, "Anne", t2)], [], R3)
    assert conn.run("SELECT xmin::text FROM dim_staff ORDER BY staff_id") == kept  # same values: no rewrite


def _state_rows(conn) -> list:
    return conn.run("SELECT staff_id, first_name, last_updated, etl_run_id FROM etl_src_staff ORDER BY 1")


def test_state_follows_the_run_that_read_a_version_not_its_stamp(conn):
    """Issue 21 item 1: T1 begins, T2 commits (stamp t2), run 1 reads it; T1 commits its older stamp t1
    afterwards and run 2 reads that. The current row is run 2's, loaded in either order."""
    t1, t2 = datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 10)
    assert _merge_run(conn, [_staff(7, "Two", t2)], [_department(1, "Sales", t1)], R1)["etl_src_staff"] == 1
    assert _merge_run(conn, [_staff(7, "One", t1)], [], R2) == {
        "etl_src_staff": 1, "etl_src_department": 0, "dim_staff": 1}
    assert _state_rows(conn) == [[7, "One", t1, R2]]
    assert conn.run("SELECT first_name FROM dim_staff") == [["One"]]
    kept = conn.run("SELECT xmin::text, ctid::text FROM etl_src_staff")
    # a replay of either run, or the older one loaded again late, changes nothing
    for run_id, version in ((R2, _staff(7, "One", t1)), (R1, _staff(7, "Two", t2))):
        assert _merge_run(conn, [version], [], run_id)["etl_src_staff"] == 0
    assert conn.run("SELECT xmin::text, ctid::text FROM etl_src_staff") == kept
    assert conn.run("SELECT first_name FROM dim_staff") == [["One"]]


def test_state_loaded_out_of_order_keeps_the_later_runs_version(conn):
    t1, t2 = datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 10)
    _merge_run(conn, [_staff(7, "One", t1)], [_department(1, "Sales", t1)], R2)
    assert _merge_run(conn, [_staff(7, "Two", t2)], [], R1)["etl_src_staff"] == 0
    assert _state_rows(conn) == [[7, "One", t1, R2]]
    assert conn.run("SELECT first_name FROM dim_staff") == [["One"]]


def test_a_later_run_rereading_a_version_takes_it_over(conn):
    """The run id moves even when the values do not (so a run between them, loaded late, cannot win);
    no value changed, so the count says 0."""
    t1, t2 = datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 10)
    _merge_run(conn, [_staff(7, "One", t1)], [_department(1, "Sales", t1)], R1)
    assert _merge_run(conn, [_staff(7, "One", t1)], [], R3)["etl_src_staff"] == 0
    assert _merge_run(conn, [_staff(7, "Two", t2)], [], R2)["etl_src_staff"] == 0
    assert _state_rows(conn) == [[7, "One", t1, R3]]


def _facts(conn) -> list:
    return conn.run("SELECT payment_id, last_updated_time, payment_amount, etl_run_id FROM fact_payment "
                    "ORDER BY 1, 2")


def _fact_run(conn, rows: list[dict], run_id: str) -> int:
    with transaction(conn):
        _stage(conn, PAYMENT, rows)
        return merge.insert_fact_versions(conn, PAYMENT, run_id)


def _current(conn) -> list:
    order = ", ".join(f"{c} DESC" for c in newest_first(PAYMENT))
    return conn.run(f"SELECT DISTINCT ON (payment_id) payment_id, last_updated_time, payment_amount "
                    f"FROM fact_payment ORDER BY payment_id, {order}")


def test_two_commits_with_one_stamp_are_one_version_and_the_later_commit_wins(conn):
    assert _fact_run(conn, [_payment(1, time(9, 0), "1.50")], R1) == 1
    assert _fact_run(conn, [_payment(1, time(9, 0), "2.00")], R2) == 1
    assert _facts(conn) == [[1, time(9, 0), Decimal("2.00"), R2]]
    kept = conn.run("SELECT xmin::text, ctid::text, payment_record_id FROM fact_payment")
    assert _fact_run(conn, [_payment(1, time(9, 0), "1.50")], R1) == 0       # the older run, loaded late
    assert _fact_run(conn, [_payment(1, time(9, 0), "2.00")], R2) == 0       # a replay
    assert _fact_run(conn, [_payment(1, time(9, 0), "2.0")], R3) == 0        # the same values, a later run
    assert conn.run("SELECT xmin::text, ctid::text, payment_record_id FROM fact_payment") == kept
    assert _facts(conn) == [[1, time(9, 0), Decimal("2.00"), R2]]


def test_the_current_fact_version_is_the_latest_runs_whatever_its_stamp(conn):
    _fact_run(conn, [_payment(1, time(10, 0), "2.00")], R1)                  # T2's version, stamped later
    _fact_run(conn, [_payment(1, time(9, 0), "1.00")], R2)                   # T1's, committed after it
    assert _facts(conn) == [[1, time(9, 0), Decimal("1.00"), R2], [1, time(10, 0), Decimal("2.00"), R1]]
    assert _current(conn) == [[1, time(9, 0), Decimal("1.00")]]
    # a later run reads the 10:00 version again (the source holds it again): it becomes current
    assert _fact_run(conn, [_payment(1, time(10, 0), "2.00")], R3) == 1
    assert _current(conn) == [[1, time(10, 0), Decimal("2.00")]]
    kept = conn.run("SELECT xmin::text, ctid::text FROM fact_payment ORDER BY 1")
    for run_id, version in ((R1, _payment(1, time(10, 0), "2.00")), (R2, _payment(1, time(9, 0), "1.00")),
                            (R3, _payment(1, time(10, 0), "2.00"))):
        assert _fact_run(conn, [version], run_id) == 0
    assert conn.run("SELECT xmin::text, ctid::text FROM fact_payment ORDER BY 1") == kept


def test_a_version_carried_x_y_x_by_three_runs_and_loaded_r1_r3_r2_ends_x(conn):
    """Three commits under one stamp carry amounts x, y, x; runs R1 < R2 < R3 read them. In order
    the version ends x (R3's). Loaded R1, R3, R2 it ends x too, and no row is rewritten after R1:
    R3 brings the values stored, and R2, older than R3, must not win over them."""
    assert _fact_run(conn, [_payment(1, time(9, 0), "1.00")], R1) == 1
    kept = conn.run("SELECT xmin::text, ctid::text, payment_record_id, etl_run_id FROM fact_payment")
    assert _fact_run(conn, [_payment(1, time(9, 0), "1.00")], R3) == 0
    assert _fact_run(conn, [_payment(1, time(9, 0), "2.00")], R2) == 0
    assert conn.run("SELECT xmin::text, ctid::text, payment_record_id, etl_run_id FROM fact_payment") == kept
    assert _current(conn) == [[1, time(9, 0), Decimal("1.00")]]
    # the row keeps R1; the ledger holds R3, the run an in-order load leaves in the row
    assert _effective(conn) == [[1, time(9, 0), Decimal("1.00"), R3]]


def test_a_version_read_again_stays_current_when_a_run_between_brings_another_late(conn):
    """R1 reads the 10:00 version, R2 a 9:00 one (committed later, stamped earlier), R3 the 10:00 one
    again. Loaded R1, R3, R2, the 10:00 version must stay current, and every row ends as the in-order
    load leaves it (test_the_current_fact_version_is_the_latest_runs_whatever_its_stamp)."""
    _fact_run(conn, [_payment(1, time(10, 0), "2.00")], R1)
    kept = conn.run("SELECT xmin::text, ctid::text FROM fact_payment")
    assert _fact_run(conn, [_payment(1, time(10, 0), "2.00")], R3) == 0    # the values stored: no row rewritten
    assert conn.run("SELECT xmin::text, ctid::text FROM fact_payment") == kept
    _fact_run(conn, [_payment(1, time(9, 0), "1.00")], R2)
    assert _current(conn) == [[1, time(10, 0), Decimal("2.00")]]
    assert _facts(conn) == [[1, time(9, 0), Decimal("1.00"), R2], [1, time(10, 0), Decimal("2.00"), R3]]


#: Runs R1 < R2 < R3 < R4, and what a run may carry of one payment id: nothing, or one version
#: (stamp 9:00 or 10:00) with one of two amounts.
_RUNS = tuple(f"20241114T10000{n}000000Z" for n in range(1, 5))
_CARRIED = (None, (time(9, 0), "1.00"), (time(9, 0), "2.00"), (time(10, 0), "1.00"), (time(10, 0), "2.00"))


def _in_order(script: tuple) -> dict:
    """What an in-order load must leave for one id whose runs carried `script`: each stamp with the
    values of the latest run that carried it, that run as its effective run (its `etl_run_id` or its
    re-read ledger entry, the later), and the current version (the latest run's)."""
    values, current = {}, None
    for run_id, carried in zip(_RUNS, script):
        if carried is not None:
            values[carried[0]] = (Decimal(carried[1]), run_id)
            current = carried[0]
    return {"versions": sorted((stamp, *kept) for stamp, kept in values.items()),
            "current": current and (current, values[current][0])}


def _effective(conn) -> list:
    """Each payment version with its values and its effective run (load/rereads.py)."""
    ledger = reread_table(PAYMENT.name).name
    return conn.run(f"SELECT payment_id, last_updated_time, payment_amount, greatest(f.etl_run_id, x.etl_run_id) "
                    f"FROM fact_payment AS f LEFT JOIN {ledger} AS x "
                    f"USING (payment_id, last_updated_date, last_updated_time) ORDER BY 1, 2")


def test_every_order_of_four_runs_ends_as_the_in_order_load(conn):
    """Every script of four runs over one id (each run carries nothing or one of four versions: 625
    ids, one per script, all in the same runs) loaded in each of the 24 orders ends with the in-order
    versions, values, effective runs and current version."""
    scripts = list(itertools.product(_CARRIED, repeat=len(_RUNS)))
    expected = {payment_id: _in_order(script) for payment_id, script in enumerate(scripts, start=1)}
    for order in itertools.permutations(range(len(_RUNS))):
        _empty_facts(conn)
        for n in order:
            rows = [_payment(payment_id, script[n][0], script[n][1])
                    for payment_id, script in enumerate(scripts, start=1) if script[n] is not None]
            _fact_run(conn, rows, _RUNS[n])
        found = {payment_id: {"versions": [], "current": None} for payment_id in expected}
        for payment_id, stamp, amount, run_id in _effective(conn):
            found[payment_id]["versions"].append((stamp, amount, run_id))
        for payment_id, stamp, amount in _current(conn):
            found[payment_id]["current"] = (stamp, amount)
        wrong = {scripts[i - 1]: found[i] for i in expected if found[i] != expected[i]}
        assert not wrong, f"order {[n + 1 for n in order]}: {len(wrong)} differ, e.g. {next(iter(wrong.items()))}"


def _empty_facts(conn) -> None:
    conn.run(f"DELETE FROM fact_payment; DELETE FROM {reread_table(PAYMENT.name).name}")
