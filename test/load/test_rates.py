"""`fact_exchange_rate`'s merge rule (load/rates.py) against a real PostgreSQL: a key is inserted once,
and replaced only by a later run's different values."""
import itertools
from datetime import date
from decimal import Decimal

import pytest

from totesys_etl.adapters.postgres import transaction
from totesys_etl.load.files import create_temp_sql, temp_name
from totesys_etl.load.rates import merge_rates
from totesys_etl.schema import FACT_EXCHANGE_RATE
from totesys_etl.schema.rereads import reread_table

DAY = date(2024, 1, 8)
LEDGER = reread_table(FACT_EXCHANGE_RATE.name).name


@pytest.fixture
def warehouse(migrated):
    return migrated


def load(conn, run_id: str, rows) -> int:
    with transaction(conn):
        conn.run(create_temp_sql(FACT_EXCHANGE_RATE))
        days, currencies, rates, carried = zip(*rows) if rows else ((), (), (), ())
        conn.run(f"INSERT INTO {temp_name(FACT_EXCHANGE_RATE)} SELECT * FROM unnest(CAST(:d AS date[]), "
                 "CAST(:c AS int[]), CAST(:r AS numeric[]), CAST(:k AS boolean[]))",
                 d=list(days), c=list(currencies), r=list(rates), k=list(carried))
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


R1, R2, R3 = "20260101T000000000000Z", "20260102T000000000000Z", "20260103T000000000000Z"


def test_a_rate_carried_x_y_x_by_three_runs_and_loaded_r1_r3_r2_ends_x(warehouse):
    """The API revised a rate and then revised it back: R1 < R2 < R3 carry x, y, x. In order the row
    ends x; loaded R1, R3, R2 it must too, with no row rewritten after R1 (R3 brings the value stored,
    and R2 is older than R3)."""
    assert load(warehouse, R1, [(DAY, 2, "1.2712", False)]) == 1
    kept = stored(warehouse)
    assert load(warehouse, R3, [(DAY, 2, "1.2712", False)]) == 0
    assert load(warehouse, R2, [(DAY, 2, "1.2713", False)]) == 0
    assert stored(warehouse) == kept
    # the row keeps R1; the ledger holds R3, the run an in-order load leaves in the row
    assert warehouse.run(f"SELECT rate_date, currency_id, etl_run_id FROM {LEDGER}") == [[DAY, 2, R3]]


def test_every_order_of_four_runs_ends_with_the_latest_runs_values(warehouse):
    """Every script of four runs over one key (each run carries nothing, or one of two values: 81
    keys, one per script, in the same runs) loaded in each of the 24 orders ends with the values of
    the latest run that carried the key, as an in-order load does, and that run as the key's
    effective run (its `etl_run_id` or its re-read ledger entry, the later)."""
    runs = (R1, R2, R3, "20260104T000000000000Z")
    scripts = list(itertools.product((None, ("1.2712", False), ("1.2713", True)), repeat=len(runs)))
    expected = {}
    for currency_id, script in enumerate(scripts, start=1):
        carried = [(run_id, values) for run_id, values in zip(runs, script) if values is not None]
        if carried:
            run_id, (rate, flag) = carried[-1]
            expected[currency_id] = (Decimal(rate), flag, run_id)
    for order in itertools.permutations(range(len(runs))):
        warehouse.run(f"DELETE FROM fact_exchange_rate; DELETE FROM {LEDGER}")
        for n in order:
            load(warehouse, runs[n], [(DAY, currency_id, *script[n]) for currency_id, script in
                                      enumerate(scripts, start=1) if script[n] is not None])
        found = {r[0]: tuple(r[1:]) for r in warehouse.run(
            f"SELECT currency_id, units_per_gbp, carried, greatest(f.etl_run_id, x.etl_run_id) "
            f"FROM fact_exchange_rate AS f LEFT JOIN {LEDGER} AS x USING (rate_date, currency_id)")}
        wrong = {scripts[i - 1]: found.get(i) for i in expected if found.get(i) != expected[i]}
        assert not wrong and found.keys() == expected.keys(), f"order {[n + 1 for n in order]}: {wrong}"
