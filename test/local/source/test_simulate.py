"""`simulate` on a seeded source and on the real snapshot: exactly N row changes, stamped by the server."""
from __future__ import annotations

import secrets

import pytest
from pg8000.native import identifier

from totesys_etl.errors import ConfigurationError
from totesys_etl.local.services import admin
from totesys_etl.local.source.seed import seed
from totesys_etl.local.source.simulate import KINDS, simulate
from totesys_etl.local.source.snapshot import load_snapshot
from totesys_etl.schema import SOURCE_TABLES


def changed_since(run_sql, url: str, moment) -> dict[str, list]:
    """Per table, the (id, created_at, last_updated) of rows whose last_updated is at or after `moment`."""
    return {t.name: run_sql(url, f"SELECT {identifier(t.key[0])}, created_at, last_updated FROM {identifier(t.name)} "
                                 "WHERE last_updated >= :m ORDER BY 1", m=moment) for t in SOURCE_TABLES}


def server_now(run_sql, url: str):
    return run_sql(url, "SELECT date_trunc('milliseconds', LOCALTIMESTAMP)")[0][0]


@pytest.fixture
def seeded(source):
    seed(source.admin_url, orders=300, seed=5)
    return source


def test_exactly_n_rows_change_each_stamped_with_its_transaction_time(seeded, run_sql):
    url = seeded.admin_url
    before = server_now(run_sql, url)
    counts = simulate(url, changes=60, seed=11)
    assert sum(counts.values()) == 60
    assert set(counts) == {k.name for k in KINDS}  # 60 rows leave room for every kind
    changed = changed_since(run_sql, url, before)
    assert sum(len(rows) for rows in changed.values()) == 60
    stamps = {row[2] for rows in changed.values() for row in rows}
    assert 1 <= len(stamps) <= 3  # a few transactions, each one time
    assert all(s.microsecond % 1000 == 0 and s <= server_now(run_sql, url) for s in stamps)
    new = [row for rows in changed.values() for row in rows if row[1] == row[2]]
    updated = [row for rows in changed.values() for row in rows if row[1] < row[2]]
    assert len(new) + len(updated) == 60 and new and updated
    orders = counts["new_sales_orders"] // 3
    assert len([r for r in changed["sales_order"] if r[0] > 300]) == orders
    # each new sales order has its transaction and a payment, all written together
    assert run_sql(url, """
        SELECT count(*) FROM sales_order s JOIN transaction t USING (sales_order_id)
        JOIN payment p USING (transaction_id)
        WHERE s.sales_order_id > 300 AND s.created_at = t.created_at AND t.created_at = p.created_at""") == [[orders]]
    # the first address changed is a counterparty's legal address
    assert run_sql(url, "SELECT count(*) FROM counterparty c JOIN address a ON a.address_id = c.legal_address_id "
                        "WHERE a.last_updated >= :m AND a.created_at < :m", m=before)[0][0] > 0
    # the read-only role sees the new rows
    assert run_sql(seeded.reader_url, "SELECT count(*) FROM sales_order") == [[300 + orders]]


def test_large_runs_stay_exact_when_small_tables_run_out(seeded, run_sql):
    """More staff and department changes than rows: the shortfall becomes new addresses, never a
    second change to the same row (which would hide a change)."""
    url = seeded.admin_url
    before = server_now(run_sql, url)
    counts = simulate(url, changes=700, seed=2)
    assert sum(counts.values()) == 700
    assert sum(len(rows) for rows in changed_since(run_sql, url, before).values()) == 700


def test_the_same_seed_makes_the_same_changes(seeded, postgres, run_sql):
    other = f"sim{secrets.token_hex(4)}"
    admin.create_database(postgres, other)
    other_url = postgres.url(other)
    seed(other_url, orders=300, seed=5)
    assert simulate(seeded.admin_url, changes=40, seed=9) == simulate(other_url, changes=40, seed=9)

    def rows(url):  # every column but the server's timestamps
        return {t.name: run_sql(url, f"SELECT string_agg((to_jsonb(x) - 'created_at' - 'last_updated')::text, ',' "
                                     f"ORDER BY x.{identifier(t.key[0])}) FROM {identifier(t.name)} x")
                for t in SOURCE_TABLES}
    assert rows(seeded.admin_url) == rows(other_url)


def test_simulate_on_the_real_snapshot_without_payments(source, run_sql):
    load_snapshot(source.admin_url)
    before = server_now(run_sql, source.admin_url)
    counts = simulate(source.admin_url, changes=50, seed=1)
    assert sum(counts.values()) == 50 and "paid_payments" not in counts  # nothing to mark paid
    assert sum(len(rows) for rows in changed_since(run_sql, source.admin_url, before).values()) == 50


def test_no_tables_no_simulation(source):
    with pytest.raises(ConfigurationError, match="seed"):
        simulate(source.admin_url, changes=5)
    with pytest.raises(ConfigurationError):
        simulate(source.admin_url, changes=-1)
