"""The re-read ledger's bookkeeping (load/rereads.py) against a real warehouse: written only when a
run carries a stored row again unchanged, read per row only when runs come out of order, pruned by
the mark."""
from datetime import date, time
from decimal import Decimal

import pytest

from totesys_etl.adapters.postgres import transaction
from totesys_etl.load import merge
from totesys_etl.load.files import create_temp_sql, temp_name
from totesys_etl.load.ledger import set_mark
from totesys_etl.schema import star_table
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.rereads import reread_table

PAYMENT = star_table("fact_payment")
LEDGER = reread_table(PAYMENT.name).name
R1, R2, R3, R4 = (f"20241114T10000{n}000000Z" for n in range(1, 5))


@pytest.fixture
def conn(migrated):
    return migrated


def _payments(ids, updated: time, amount: str) -> list[dict]:
    return [{"payment_id": i, "created_date": date(2024, 1, 2), "created_time": time(9, 0),
             "last_updated_date": date(2024, 1, 2), "last_updated_time": updated, "transaction_id": 7,
             "counterparty_id": 3, "payment_amount": Decimal(amount), "currency_id": 1, "payment_type_id": 2,
             "paid": False, "payment_date": date(2024, 2, 1)} for i in ids]


def _run(conn, rows: list[dict], run_id: str) -> int:
    """Merge a run's payments in a transaction; the rows written."""
    names = [c.name for c in PAYMENT.data_columns]
    with transaction(conn):
        conn.run(create_temp_sql(PAYMENT))
        arrays = ", ".join(f"CAST(:{c.name} AS {c.type}[])" for c in PAYMENT.data_columns)
        conn.run(f"INSERT INTO {temp_name(PAYMENT)} ({column_list(names)}) SELECT * FROM unnest({arrays})",
                 **{n: [row[n] for row in rows] for n in names})
        return merge.insert_fact_versions(conn, PAYMENT, run_id)


def _ledger(conn) -> list:
    return conn.run(f"SELECT payment_id, etl_run_id FROM {LEDGER} ORDER BY 1")


def test_a_load_in_order_reads_the_ledger_per_row_nowhere(conn, monkeypatch):
    """The common path: runs loaded in order, each of new versions or of new values for stored ones,
    with entries in the ledger from earlier runs. Every statement that names the ledger reads it by
    its run index alone (entries later than the run: none in order; entries below the mark), never
    joined with the run's rows, and nothing is written to it."""
    _run(conn, _payments((1, 2), time(9, 0), "1.00"), R1)
    _run(conn, _payments((1,), time(9, 0), "1.00"), R2)                     # an entry, from an earlier run
    statements = []
    run = conn.run
    monkeypatch.setattr(conn, "run", lambda sql, **params: statements.append(sql) or run(sql, **params))
    assert _run(conn, [*_payments((2,), time(9, 0), "2.00"), *_payments((3,), time(9, 0), "1.00")], R3) == 2
    assert _run(conn, _payments(range(4, 2000), time(10, 0), "1.00"), R4) == 1996
    named = [sql for sql in statements if LEDGER in sql]
    assert named and not any(temp_name(PAYMENT) in sql or sql.startswith("INSERT") for sql in named), named
    assert _ledger(conn) == [[1, R2]]


def test_only_rows_carried_again_unchanged_by_a_later_run_are_recorded(conn):
    _run(conn, _payments(range(1, 5), time(9, 0), "1.00"), R1)
    # R3 carries 1 and 2 unchanged, 3 with another amount, and 5, which is new
    rows = [*_payments((1, 2), time(9, 0), "1.00"), *_payments((3,), time(9, 0), "3.00"),
            *_payments((5,), time(9, 0), "1.00")]
    assert _run(conn, rows, R3) == 2
    assert _ledger(conn) == [[1, R3], [2, R3]]
    # an older run (R2) recorded nothing and changes nothing; a later one (R4) moves the entry forward
    assert _run(conn, _payments((1, 2), time(9, 0), "2.00"), R2) == 0
    assert _run(conn, _payments((1,), time(9, 0), "1.00"), R4) == 0
    assert _ledger(conn) == [[1, R4], [2, R3]]


def test_entries_at_or_below_the_mark_are_pruned(conn):
    """Every run up to the loaders' mark is loaded, so no older run can come that an entry must stop."""
    _run(conn, _payments((1, 2, 3), time(9, 0), "1.00"), R1)
    _run(conn, _payments((1,), time(9, 0), "1.00"), R2)
    _run(conn, _payments((2,), time(9, 0), "1.00"), R3)
    assert _ledger(conn) == [[1, R2], [2, R3]]
    set_mark(conn, R2)
    _run(conn, _payments((4,), time(9, 0), "1.00"), R4)
    assert _ledger(conn) == [[2, R3]]
    set_mark(conn, R4)
    _run(conn, _payments((5,), time(9, 0), "1.00"), "20241114T100005000000Z")
    assert _ledger(conn) == []
