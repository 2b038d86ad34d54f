"""`fact_exchange_rate`'s merge rule (load/rates.py) against a real PostgreSQL: a key is inserted once,
and replaced only by a later run's different values."""
from datetime import date
from decimal import Decimal

import pytest

from totesys_etl.adapters.postgres import transaction
from totesys_etl.load.files import create_temp_sql, temp_name
from totesys_etl.load.rates import merge_rates
from totesys_etl.schema import FACT_EXCHANGE_RATE

DAY = date(2024, 1, 8)


@pytest.fixture
def warehouse(migrated):
    return migrated


def load(conn, run_id: str, rows) -> int:
    with transaction(conn):
        conn.run(create_temp_sql(FACT_EXCHANGE_RATE))
        for day, currency_id, rate, carried in rows:
            conn.run(f"INSERT INTO {temp_name(FACT_EXCHANGE_RATE)} VALUES (:d, :c, CAST(:r AS numeric), :k)",
                     d=day, c=currency_id, r=rate, k=carried)
        return merge_rates(conn, FACT_EXCHANGE_RATE, run_id)


def stored(conn):
    return conn.run("SELECT xmin::text, rate_date, currency_id, units_per_gbp, carried, etl_run_id "
                    "FROM fact_exchange_rate ORDER BY 2, 3")


def test_a_key_is_stored_once_and_replaced_only_by_a_later_runs_different_values(warehouse):
    assert load(warehouse, "20260101T000000000000Z", [(DAY, 1, "1", False), (DAY, 2, "1.2712", False)]) == 2
    first = stored(warehouse)
    assert [r[3] for r in first] == [Decimal(1), Decimal("1.2712")]
    # A replay, an older run loaded late (other values), a later run with the same values (trailing
    # zero only): no row changes, not even its xmin or etl_run_id.
    assert load(warehouse, "20260101T000000000000Z", [(DAY, 2, "1.2712", False)]) == 0
    assert load(warehouse, "20251231T000000000000Z", [(DAY, 2, "9.9", True)]) == 0
    assert load(warehouse, "20260102T000000000000Z", [(DAY, 2, "1.27120", False)]) == 0
    assert stored(warehouse) == first
    # A later run whose value differs (a revised rate) replaces that row alone.
    assert load(warehouse, "20260103T000000000000Z", [(DAY, 1, "1", False), (DAY, 2, "1.2713", False)]) == 1
    now = stored(warehouse)
    assert now[0] == first[0]
    assert now[1][3:] == [Decimal("1.2713"), False, "20260103T000000000000Z"]
