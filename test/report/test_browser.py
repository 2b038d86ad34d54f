"""The report opened in a real headless Chromium: it loads offline with no console error and no request
but the file itself, every chart has marks, it fits a phone's width, and the figures a reader sees
equal the analytical views' figures."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.report import warehouse_from_env, write_report
from totesys_etl.report.figures import MONEY, SECTIONS, cell, money

READ_PAGE = None  # set below from conftest (pytest's importlib mode gives tests no shared package)


def _browser_kit():
    import importlib.util

    spec = importlib.util.spec_from_file_location("totesys_test_report_conftest", Path(__file__).parent /
                                                  "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_KIT = _browser_kit()
READ_PAGE, CHART_TEXT, WIDE_TABLES, overlapping = _KIT.READ_PAGE, _KIT.CHART_TEXT, _KIT.WIDE_TABLES, _KIT.overlapping
LAPTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844, "mobile": True}


def opened(page, path: Path, **viewport) -> dict:
    """The page as Chromium shows it, after checking it loaded cleanly and fetched nothing."""
    url = path.resolve().as_uri()
    page.open(url, **viewport)
    assert page.errors() == []
    assert page.requests() == [url]
    shown = page.evaluate(READ_PAGE)
    assert shown["scripts"] == 0
    assert shown["overflow"] <= 0, "the page is wider than the screen"
    return shown


def views_as_shown(url: str) -> tuple[dict, dict]:
    """Each section's rows straight from the views, as the page writes them (an independent read): the
    text shown, and the exact value every money cell carries."""
    conn = pg8000.native.Connection(**parse_url(url))
    try:
        rows = {s: conn.run(s.query) for s in SECTIONS if s.table}
        rows = {s: got for s, got in rows.items() if got}  # a section without rows shows no table (No rows yet.)
    finally:
        conn.close()
    shown = {s.key: [[cell(kind, v) for (_, _, kind), v in zip(s.columns, row)] for row in got]
             for s, got in rows.items()}
    exact = {s.key: [[money(v) if kind == MONEY and v is not None else None for (_, _, kind), v in zip(s.columns, row)]
                     for row in got] for s, got in rows.items()}
    return shown, exact


def assert_figures_equal_views(shown: dict, url: str) -> None:
    tables, exact = views_as_shown(url)
    assert shown["tables"] == tables
    assert shown["exact"] == exact


def test_known_rows_in_chromium(filled_warehouse, page, tmp_path):
    out = write_report(warehouse_from_env({"TOTESYS_WAREHOUSE_URL": filled_warehouse}), tmp_path / "r.html")
    for viewport in ({"width": 1280, "height": 900}, {"width": 390, "height": 844, "mobile": True}):
        shown = opened(page, out, **viewport)
        assert_figures_equal_views(shown, filled_warehouse)
        assert shown["tables"]["currency"][0] == ["GBP", "Pound Sterling", "3", "22", "63.97"]
        hostile = 'O\'Brien "<script>alert(1)</script>"\nZoë 😀'
        assert [hostile, "2", "10", "5.97"] in shown["tables"]["counterparties"]   # shown as text, not run
        assert shown["kpis"] == {"sales_gbp": "£76", "purchases_gbp": "£2,400,000.00 trillion", "receivable_gbp": "£6",
                                 "payable_gbp": "£0", "average_order_gbp": "£25", "orders": "4",
                                 "data_as_of": "2024-05-01 12:30 UTC"}
        assert shown["kpi_exact"] == {"sales_gbp": "75.97", "purchases_gbp": "2,400,000,000,000,000,025.89135782",
                                      "receivable_gbp": "5.50", "payable_gbp": "0.00",
                                      "average_order_gbp": "25.32", "orders": None,
                                      "data_as_of": None}
        charts = shown["charts"]
        assert set(charts) == {"trend", "month", "designs", "countries", "counterparties", "staff", "ageing",
                               "departments", "payments", "deliveries"}
        assert all(c["marks"] > 0 and 0 < c["width"] <= viewport["width"] for c in charts.values()), charts
        assert charts["designs"]["marks"] == 2 and charts["departments"]["marks"] == 3   # one bar per row


@pytest.mark.slow
def test_a_seeded_pipeline_run_reported_and_shown(pipeline_env, fx_api, source, warehouse_url, page, tmp_path,
                                                  run_sql):
    """End to end: seed (its default values), one `tick` with the FX source on, then `report` as a user runs
    them; the page equals the views, states GBP totals, and no order dominates them."""
    env = {**os.environ, **pipeline_env, "TOTESYS_SETTLE_SECONDS": "2", "TOTESYS_FX_API_URL": fx_api.url}
    for command in (("seed", "--orders", "400", "--seed", "11"), ("tick",)):
        done = subprocess.run([sys.executable, "-m", "totesys_etl", *command], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    out = tmp_path / "report.html"
    only_warehouse = {k: v for k, v in env.items() if not k.startswith("TOTESYS_")}
    done = subprocess.run([sys.executable, "-m", "totesys_etl", "report", "--out", str(out)],
                          env={**only_warehouse, "TOTESYS_WAREHOUSE_URL": warehouse_url}, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    for viewport in (LAPTOP, PHONE):
        shown = opened(page, out, **viewport)
        assert_figures_equal_views(shown, warehouse_url)
        assert_legible(page, viewport["width"])
    orders = run_sql(warehouse_url, "SELECT count(DISTINCT sales_order_id) FROM fact_sales_order")[0][0]
    assert orders == 400 and shown["kpis"]["orders"] == "400"
    total, largest, valued = run_sql(warehouse_url, "SELECT sum(sales_value_gbp), max(sales_value_gbp), "
                                                    "count(sales_value_gbp) FROM analytics.sales_in_gbp")[0]
    assert valued > 390 and largest <= total / 100   # the real snapshot's largest order: 0.024 % of sales
    assert shown["kpi_exact"]["sales_gbp"] == money(total) and shown["kpis"]["sales_gbp"].endswith("million")
    assert len(shown["tables"]["designs"]) == 10 and len(shown["charts"]) == 9   # no courier files: no deliveries
    assert all(c["marks"] > 0 for c in shown["charts"].values())
    run_id = run_sql(warehouse_url, "SELECT max(run_id) FROM etl_load_ledger")[0][0]
    assert f"Newest loaded run {run_id}" in shown["freshness"]


def assert_legible(page, width: int) -> list[dict]:
    """No two text boxes of a chart overlap; on a phone no chart text is under 10 px; a table wider than
    its box says that it scrolls."""
    texts = page.evaluate(CHART_TEXT)
    assert texts, "no chart text found"
    assert overlapping(texts) == [], width
    if width < 600:
        assert [(t["chart"], t["text"], round(t["px"], 1)) for t in texts if t["px"] < 10] == []
    assert [t for t in page.evaluate(WIDE_TABLES) if not t["cue"]] == [], width
    return texts


@pytest.mark.parametrize("rows", ["filled_warehouse", "busy_warehouse"])
def test_charts_are_legible_on_a_laptop_and_a_phone(rows, request, page, tmp_path):
    url = request.getfixturevalue(rows)
    out = write_report(warehouse_from_env({"TOTESYS_WAREHOUSE_URL": url}), tmp_path / "r.html")
    for viewport in (LAPTOP, PHONE):
        opened(page, out, **viewport)
        assert_legible(page, viewport["width"])


#: The pieces of each solid line of the monthly GBP chart (the dashed one is the month in progress).
GAPS = """[...document.querySelectorAll('figure[data-chart="trend"] svg')].filter(
    s => getComputedStyle(s).display !== 'none').flatMap(s => [...s.querySelectorAll('g.mark-line path')]).filter(
    p => (p.getAttribute('stroke-dasharray') || '1,0') === '1,0').map(
    p => (p.getAttribute('d').match(/M/g) || []).length)"""


def test_a_busy_warehouse_reads_in_gbp_with_gaps_and_namesakes_told_apart(busy_warehouse, page, tmp_path, run_sql):
    out = write_report(warehouse_from_env({"TOTESYS_WAREHOUSE_URL": busy_warehouse}), tmp_path / "r.html")
    for viewport in (LAPTOP, PHONE):
        shown = opened(page, out, **viewport)
        assert_figures_equal_views(shown, busy_warehouse)
        # the headline figures are GBP sums of the views, and say what they leave out
        sales, missing = run_sql(busy_warehouse, "SELECT sum(sales_value_gbp), count(*) - count(sales_value_gbp) "
                                                 "FROM analytics.sales_in_gbp")[0]
        assert shown["kpi_exact"]["sales_gbp"] == money(sales) and shown["kpis"]["sales_gbp"].startswith("£")
        assert missing > 0 and f"{missing:,} order{'' if missing == 1 else 's'} not valued yet" in page.evaluate(
            "document.querySelector('[data-kpi=sales_gbp]').textContent")
        purchases = run_sql(busy_warehouse, "SELECT sum(purchase_value_gbp) FROM analytics.purchases_in_gbp")[0][0]
        assert shown["kpi_exact"]["purchases_gbp"] == money(purchases)
        owed = dict(run_sql(busy_warehouse, "SELECT direction, sum(payment_amount_gbp) "
                                            "FROM analytics.payments_outstanding GROUP BY 1"))
        assert shown["kpi_exact"]["receivable_gbp"] == money(owed["to receive"])
        assert shown["kpi_exact"]["payable_gbp"] == money(owed["to pay"])
        # three months without orders are a gap in each line, not a drop to zero
        assert page.evaluate(GAPS) == [2, 2]
        # designs of one name are told apart by id, in the table and the chart
        designs = [row[0] for row in shown["tables"]["designs"]]
        assert all(re.fullmatch(r".+ \(#\d+\)", d) for d in designs), designs
        assert {"not yet due", "1-30 days", "over 90 days"} <= {row[0] for row in shown["tables"]["ageing"]}
