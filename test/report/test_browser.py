"""The report opened in a real headless Chromium: it loads offline with no console error and no request
but the file itself, every chart has marks, it fits a phone's width, and the figures a reader sees
equal the analytical views' figures."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.report import warehouse_from_env, write_report
from totesys_etl.report.figures import MONEY, SECTIONS, cell, money

READ_PAGE = None  # set below from conftest (pytest's importlib mode gives tests no shared package)


def _read_page():
    import importlib.util

    spec = importlib.util.spec_from_file_location("totesys_test_report_conftest", Path(__file__).parent /
                                                  "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.READ_PAGE


READ_PAGE = _read_page()


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
        assert [hostile, "10", "2"] in shown["tables"]["counterparties"]   # shown as text, not run
        assert shown["kpis"] == {"orders": "4", "units_sold": "27", "sales_value_GBP": "64",
                                 "sales_value_USD": "50", "outstanding_GBP": "6", "outstanding_USD": "0"}
        assert shown["kpi_exact"] == {"orders": None, "units_sold": None, "sales_value_GBP": "63.97",
                                      "sales_value_USD": "50.00", "outstanding_GBP": "5.50", "outstanding_USD": "0.00"}
        charts = shown["charts"]
        assert set(charts) == {"month", "purchases", "designs", "countries", "counterparties", "staff",
                               "departments", "payments", "deliveries"}
        assert all(c["marks"] > 0 and 0 < c["width"] <= viewport["width"] for c in charts.values()), charts
        assert charts["designs"]["marks"] == 2 and charts["departments"]["marks"] == 3   # one bar per row


@pytest.mark.slow
def test_a_seeded_pipeline_run_reported_and_shown(pipeline_env, source, warehouse_url, page, tmp_path, run_sql):
    """End to end: seed, one `tick`, then `report` as a user runs them; the page equals the views."""
    env = {**os.environ, **pipeline_env, "TOTESYS_SETTLE_SECONDS": "2"}
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
    shown = opened(page, out)
    assert_figures_equal_views(shown, warehouse_url)
    orders = run_sql(warehouse_url, "SELECT count(DISTINCT sales_order_id) FROM fact_sales_order")[0][0]
    assert orders == 400 and shown["kpis"]["orders"] == "400"
    for code, value in run_sql(warehouse_url, "SELECT c.currency_code, sum(f.units_sold * f.unit_price) "
                                              "FROM fact_sales_order f JOIN dim_currency c USING (currency_id) "
                                              "GROUP BY 1"):
        assert shown["kpi_exact"][f"sales_value_{code}"] == money(value)   # one version per order after one run
    assert len(shown["tables"]["designs"]) == 10 and len(shown["charts"]) == 8
    assert all(c["marks"] > 0 for c in shown["charts"].values())
    run_id = run_sql(warehouse_url, "SELECT max(run_id) FROM etl_load_ledger")[0][0]
    assert f"Newest loaded run {run_id}" in shown["freshness"]
