"""The independent oracle (test/oracle.py) can fail: every kind of damage to a loaded warehouse is
reported, and a warehouse the pipeline loaded is reported clean (issue 26)."""
import pytest

from totesys_etl.local.source.simulate import simulate

pytestmark = pytest.mark.slow


@pytest.fixture
def loaded(seeded, new_pipeline, against_oracle):
    """A warehouse after two ticks with a change between them: facts hold old versions too."""
    pipeline = new_pipeline("o")
    pipeline.tick()
    simulate(seeded.admin_url, changes=60, seed=5)
    pipeline.tick()
    against_oracle("two ticks", pipeline)
    return pipeline


@pytest.fixture
def damaged(loaded, oracle_module):
    """`damaged(*statements, held_back=None)`: the oracle's problems with the loaded warehouse as
    the statements leave it, seen inside a transaction that is then rolled back (one load serves
    every case)."""
    conn = oracle_module.connect(loaded.warehouse_url)
    history = oracle_module.lake_versions(loaded.ingest_bucket)

    def check(*statements, held_back=None) -> list[str]:
        conn.run("START TRANSACTION")
        try:
            for statement in statements:
                conn.run(statement)
            return oracle_module.check(loaded.source_url, conn, held_back=held_back, history=history).problems
        finally:
            conn.run("ROLLBACK")

    yield check
    conn.close()


def _old_version(run_sql, pipeline) -> tuple:
    """A sales order version that is not its order's newest: only history keeps it."""
    return tuple(run_sql(pipeline.warehouse_url,
                         "SELECT sales_order_id, last_updated_date, last_updated_time FROM fact_sales_order f "
                         "WHERE EXISTS (SELECT 1 FROM fact_sales_order g WHERE g.sales_order_id = f.sales_order_id "
                         "AND (g.last_updated_date, g.last_updated_time) > (f.last_updated_date, f.last_updated_time)) "
                         "ORDER BY 1 LIMIT 1")[0])


DAMAGES = [
    ("DELETE FROM fact_payment WHERE payment_id = (SELECT max(payment_id) FROM fact_payment)",
     "fact_payment: 1 current versions missing"),
    ("UPDATE fact_purchase_order SET item_quantity = item_quantity + 1 "
     "WHERE purchase_record_id = (SELECT max(purchase_record_id) FROM fact_purchase_order)",
     "fact_purchase_order: 1 current versions with other values"),
    ("UPDATE dim_staff SET location = 'Nowhere' WHERE staff_id = 1", "dim_staff: 1 different"),
    ("UPDATE dim_counterparty SET counterparty_legal_city = 'Stale' WHERE counterparty_id = 2",
     "dim_counterparty: 1 different"),
    ("UPDATE dim_currency SET currency_name = 'Pound sterling' WHERE currency_code = 'GBP'",
     "dim_currency: 1 different"),
    ("DELETE FROM dim_design WHERE design_id = (SELECT min(design_id) FROM dim_design)", "dim_design: 1 missing"),
    ("INSERT INTO dim_payment_type VALUES (9999, 'Barter')", "dim_payment_type: 1 not in the source"),
    ("UPDATE dim_date SET day_name = 'Caturday' WHERE date_id = (SELECT min(created_date) FROM fact_payment)",
     "dim_date: 1 rows with wrong derived columns"),
    ("DELETE FROM dim_date WHERE date_id = (SELECT max(agreed_delivery_date) FROM fact_sales_order)",
     "dim_date: 1 dates facts refer to missing"),
    ("UPDATE fact_sales_order SET sales_staff_id = 99999 "
     "WHERE sales_record_id = (SELECT min(sales_record_id) FROM fact_sales_order)",
     "fact_sales_order: 1 keys into dim_staff that do not resolve"),
]


def test_the_oracle_reports_each_damage_and_only_it(loaded, damaged, run_sql):
    """Each damage on a copy of one loaded warehouse; then the loss `reconcile` used to miss (an
    old version gone, the newest intact), and a version that no run carried (a stamp moved by a
    millisecond), reported as well as the one it hides."""
    assert damaged() == []  # the copy itself is clean: every report below is the damage's
    for damage, reported in DAMAGES:
        found = damaged(damage)
        table = reported.split(":")[0]
        assert any(p.startswith(reported) for p in found), (damage, found)
        assert all(p.startswith(f"{table}:") for p in found), (damage, found)  # nothing else
    order, day, time = _old_version(run_sql, loaded)
    where = f"WHERE sales_order_id = {int(order)} AND last_updated_date = '{day}' AND last_updated_time = '{time}'"
    assert damaged(f"DELETE FROM fact_sales_order {where}") == [
        f"fact_sales_order: 1 versions the lake carried missing, e.g. [{(order, day, time)!r}]"]
    assert damaged(f"DELETE FROM fact_sales_order {where}", held_back={"fact_sales_order": {(order, day, time)}}) == []
    moved = damaged(f"UPDATE fact_sales_order SET last_updated_time = last_updated_time - interval '1 ms' {where}")
    assert [p.split(",")[0] for p in moved] == ["fact_sales_order: 1 versions the lake carried missing",
                                                "fact_sales_order: 1 versions no ingested run carried"], moved
