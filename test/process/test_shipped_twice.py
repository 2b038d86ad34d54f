"""A version shipped by more than one run is reported (issue 34 item 12, contract §6 reconcile: "no
version twice"), on moto's S3 and a real warehouse.

The loader stores a version once whatever reaches it, so the warehouse cannot show a reship: the
lake can. Runs here are written as the ingestor writes them (CSVs from PostgreSQL's COPY, then the
manifest), processed and loaded by the real stages, then `history.check_history` reads the lake.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.history import check_history, shipped_versions
from totesys_etl.load.handler import lambda_handler as load_handler
from totesys_etl.process import run
from totesys_etl.reconcile import Report, TableCheck

RUN_A = "20221103T142052186000Z"
RUN_B = "20221104T090102500000Z"
RUN_C = "20221105T101010000001Z"
S1 = datetime(2022, 11, 3, 14, 0, 0, 123000)
S2 = datetime(2022, 11, 4, 8, 0, 0, 456000)


def order(order_id: int, stamp: datetime, units: int = 10) -> dict:
    return {"sales_order_id": order_id, "created_at": S1, "last_updated": stamp, "design_id": 1, "staff_id": 1,
            "counterparty_id": 1, "units_sold": units, "unit_price": Decimal("2.50"), "currency_id": 1,
            "agreed_delivery_date": "2022-11-10", "agreed_payment_date": "2022-11-11",
            "agreed_delivery_location_id": 1}


def address(address_id: int, stamp: datetime, line_2: str | None = None) -> dict:
    return {"address_id": address_id, "address_line_1": "1 High St", "address_line_2": line_2, "district": "",
            "city": "Leeds", "postal_code": "LS1", "country": "UK", "phone": "0113", "created_at": S1,
            "last_updated": stamp}


@pytest.fixture
def loaded(lake_pair, copy_csv, warehouse_url, monkeypatch):
    """`loaded(runs)`: each run {table: rows} written, processed and loaded; a warehouse connection back."""
    for name, value in (("TOTESYS_WAREHOUSE_URL", warehouse_url), ("TOTESYS_INGEST_BUCKET", lake_pair.ingest),
                        ("TOTESYS_PROCESSED_BUCKET", lake_pair.processed)):
        monkeypatch.setenv(name, value)
    connections = []

    def load(runs: dict[str, dict[str, list[dict]]]) -> pg8000.native.Connection:
        for run_id, tables in runs.items():
            lake_pair.write_run(run_id, {t: (copy_csv(t, rows), len(rows)) for t, rows in tables.items()})
            run.process_run(lake_pair.settings, run_id)
        load_handler({}, None)
        connections.append(pg8000.native.Connection(**parse_url(warehouse_url)))
        return connections[-1]
    yield load
    for conn in connections:
        conn.close()


def test_a_version_shipped_again_by_a_later_run_is_reported(loaded, lake_pair):
    conn = loaded({RUN_A: {"sales_order": [order(1, S1), order(2, S1), order(3, S1)],
                           "address": [address(1, S1), address(2, S1)]},
                   # order 2 and address 1 shipped again as they were; order 3 committed again with the same
                   # stamp and new values (one version, the later commit's values win: not a reship)
                   RUN_B: {"sales_order": [order(2, S1), order(3, S1, units=99), order(4, S2)],
                           "address": [address(1, S1), address(2, S1, line_2="")]},
                   RUN_C: {"sales_order": [order(2, S1)]}})
    history = {h.fact: h for h in check_history(conn, lake_pair.ingest, lake_pair.processed)}
    orders = history["fact_sales_order"]
    assert not orders.lost and not orders.twice and not orders.unshipped   # the warehouse holds each once
    assert orders.reshipped == [((2, S1), [RUN_A, RUN_B, RUN_C])] and not orders.ok
    assert history["fact_payment"].ok

    shipped = shipped_versions(lake_pair.ingest, lake_pair.processed, {"address", "sales_order"})
    assert shipped["address"].reshipped == [((1, S1), [RUN_A, RUN_B])]   # NULL and '' are not the same value
    assert shipped["sales_order"].versions == {(1, S1), (2, S1), (3, S1), (4, S2)}

    report = Report([TableCheck("fact_sales_order", history=orders)], {"address": shipped["address"].reshipped})
    text = report.table()
    assert not report.ok and "DIFFERENCES FOUND" in text
    assert (f"fact_sales_order: 1 versions shipped by more than one run (the same row), e.g. 2 @ 2022-11-03 "
            f"14:00:00.123000 by {RUN_A}, {RUN_B}, {RUN_C}") in text
    assert "address: 1 versions shipped by more than one run (the same row), e.g. 1 @ " in text


def test_a_lake_with_each_version_once_has_nothing_reshipped(loaded, lake_pair):
    conn = loaded({RUN_A: {"sales_order": [order(1, S1), order(2, S1)]},
                   RUN_B: {"sales_order": [order(2, S2, units=5)]}})
    history = {h.fact: h for h in check_history(conn, lake_pair.ingest, lake_pair.processed)}
    assert history["fact_sales_order"].ok and history["fact_sales_order"].shipped == 3


def test_versions_read_again_by_a_run_that_read_everything_on_purpose_are_a_note_not_a_reship(
        loaded, lake_pair, copy_csv):
    """A restore detected, a lost CDC slot or a mode switch makes a run read every row (`read`
    `first` or `snapshot`, announced by a WARNING): what it carries again is stored once and named,
    not a fault. A later ordinary run shipping the same row again still is one."""
    loaded({RUN_A: {"sales_order": [order(1, S1), order(2, S1)]}})
    lake_pair.write_run(RUN_B, {"sales_order": (copy_csv("sales_order", [order(1, S1), order(2, S1)]), 2)},
                        read="snapshot")
    run.process_run(lake_pair.settings, RUN_B)
    conn = loaded({RUN_C: {"sales_order": [order(2, S1)]}})
    shipped = shipped_versions(lake_pair.ingest, lake_pair.processed, {"sales_order"})["sales_order"]
    assert (shipped.reread, shipped.reread_by) == (1, {RUN_B})        # order 1: only the full read again
    assert shipped.reshipped == [((2, S1), [RUN_A, RUN_B, RUN_C])]   # order 2: an ordinary run again
    orders = {h.fact: h for h in check_history(conn, lake_pair.ingest, lake_pair.processed)}["fact_sales_order"]
    assert not orders.lost and not orders.twice and not orders.unshipped
    report = Report([TableCheck("fact_sales_order", history=orders)], {}, {"sales_order": (1, {RUN_B})})
    assert "sales_order: 1 versions read again by a run that read every row on purpose" in report.table()
