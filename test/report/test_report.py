"""`totesys-etl report`: the page's figures equal the views', any warehouse gives a page, hostile text
stays text, and settings and failures give contract §6's exit codes with one-line reasons."""
from __future__ import annotations

import socket
import sys
from html.parser import HTMLParser
from pathlib import Path

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.cli import main
from totesys_etl.load.migrations import migrate
from totesys_etl.report.figures import compact, money, rounded


class Parsed(HTMLParser):
    """Every tag the page opens, and each table's cells as text (entities decoded)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs["data-section"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td":
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            if self._table and self._table[0] == []:
                self._table.pop(0)   # the header row
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def report(url: str, tmp_path: Path, capsys) -> tuple[str, Parsed]:
    out = tmp_path / "nested" / "report.html"
    out.parent.mkdir()  # --out writes into a folder that exists (issue 35: it made missing ones)
    assert main(["report", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text(encoding="utf-8")
    return text, Parsed(text)


@pytest.fixture
def use(monkeypatch, tmp_path):
    """The warehouse as the only setting, run from an empty clone folder (no `.local/env` to read)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOTESYS_HOME", str(tmp_path))

    def _use(url):
        monkeypatch.setenv("TOTESYS_WAREHOUSE_URL", url)
        return url
    return _use


def test_known_rows_give_the_views_figures_and_hostile_text_stays_text(filled_warehouse, use, tmp_path, capsys):
    use(filled_warehouse)
    text, page = report(filled_warehouse, tmp_path, capsys)
    # by hand: current versions only (order 1: 12 units, order 2: 5 not 999, order 4: 7), values exact
    assert page.tables["currency"] == [["GBP", "Pound Sterling", "3", "22", "63.97"],
                                       ["USD", "US Dollar", "1", "5", "50.00"]]
    assert page.tables["payments"] == [["PURCHASE_PAYMENT", "USD", "1", "12.25", "0", "0.00"],
                                       ["SALES_RECEIPT", "GBP", "1", "30.00", "1", "5.50"]]
    # in GBP at each order's agreed payment date's rate (test_views.RATES): order 2's USD 50.00 at 1.25 is
    # 40.00, and order 4 (no rate for its date) is counted but not valued
    assert page.tables["designs"] == [["Tote B", "2", "8", "45.97"], ["Tote A", "2", "19", "30.00"]]
    assert page.tables["countries"] == [["France", "2", "8", "45.97"], ["United Kingdom", "2", "19", "30.00"]]
    assert page.tables["ageing"] == [["over 90 days", "to receive", "1", "5.50"]]
    assert page.tables["quarter"] == [["2024 Q2", "GBP", "2", "10", "33.97"], ["2024 Q1", "GBP", "1", "12", "30.00"],
                                      ["2024 Q1", "USD", "1", "5", "50.00"]]
    hostile = 'O\'Brien "<script>alert(1)</script>"\nZoë 😀'
    assert page.tables["counterparties"] == [["Acme Totes", "2", "17", "70.00"], [hostile, "2", "10", "5.97"]]
    assert "script" not in page.tags and "<script" not in text.replace("&lt;script", "")
    assert "Newest loaded run 20240201T000000000000Z" in text and "2 runs loaded" in text
    assert "Newest source change held: 2024-05-01 12:30 UTC" in text
    assert page.tables["deliveries"] == [["DPD", "2", "1", "1", "50.0"], ["UPS", "2", "1", "0", "100.0"]]
    # every section but the two tables without a chart (currency, quarter), drawn for a laptop and a phone
    assert text.count("<svg") == 2 * 10
    assert "1 order not valued yet: due after the newest rate (the latest on 2024-04-10)" in text


def test_money_is_exact_and_rounded_half_to_even_in_decimal():
    from decimal import Decimal

    assert money(Decimal("1234567.5")) == "1,234,567.50"
    assert money(Decimal("24.691357820")) == "24.69135782"
    assert money(Decimal("3000000000000000001.5")) == "3,000,000,000,000,000,001.50"
    assert money(Decimal("0")) == "0.00" and money(None) == ""
    assert rounded(Decimal("24.69135782")) == "24.69" and rounded(Decimal("0.125")) == "0.12"
    assert rounded(Decimal("99999999999999999999.995")) == "100,000,000,000,000,000,000.00"
    assert compact(Decimal("5734539246458.3")) == "5.73 trillion" and compact(Decimal("-2500000")) == "-2.50 million"
    assert compact(Decimal("999999.5")) == "1,000,000" and compact(Decimal("63.97")) == "64"
    assert rounded(Decimal("5.5"), 0) == "6" and rounded(Decimal("4.5"), 0) == "4" and rounded(None) == ""


def test_a_warehouse_without_the_schema_says_nothing_is_loaded(warehouse_url, use, tmp_path, capsys):
    use(warehouse_url)
    text, page = report(warehouse_url, tmp_path, capsys)
    assert 'data-state="no views"' in text and "Nothing loaded yet" in text
    assert "<svg" not in text and page.tables == {}


def test_an_empty_warehouse_says_so(warehouse_url, use, tmp_path, capsys):
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    migrate(conn)
    conn.close()
    use(warehouse_url)
    text, page = report(warehouse_url, tmp_path, capsys)
    assert 'data-state="empty"' in text and "No run loaded yet." in text
    assert "<svg" not in text and page.tables == {}
    assert text.count("No rows yet.") == 12


def test_a_tiny_warehouse_charts_its_one_order(filled_warehouse, use, tmp_path, capsys, run_sql):
    run_sql(filled_warehouse, "DELETE FROM fact_sales_order WHERE sales_order_id <> 2")
    run_sql(filled_warehouse, "DELETE FROM fact_payment")
    run_sql(filled_warehouse, "DELETE FROM fact_delivery")
    use(filled_warehouse)
    text, page = report(filled_warehouse, tmp_path, capsys)
    assert page.tables["currency"] == [["USD", "US Dollar", "1", "5", "50.00"]]
    assert page.tables["counterparties"] == [["Acme Totes", "1", "5", "40.00"]]
    assert "payments" not in page.tables and "deliveries" not in page.tables and "ageing" not in page.tables
    assert text.count("<svg") == 2 * 7


def test_no_warehouse_setting_is_bad_configuration(use, capsys):
    assert main(["report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TOTESYS_WAREHOUSE_URL" in err


def test_a_malformed_url_is_bad_configuration(use, capsys):
    use("http://nowhere")
    assert main(["report"]) == 2
    assert "postgresql://" in capsys.readouterr().err


def test_an_unreachable_warehouse_fails_naming_it_not_its_password(use, capsys):
    with socket.socket() as probe:   # a port just released: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    use(f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/dw")
    assert main(["report"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warehouse database 'dw'" in err and "s3cret-pw" not in err


def test_the_default_path_is_under_local(filled_warehouse, use, tmp_path, capsys):
    use(filled_warehouse)
    assert main(["report"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / ".local" / "report.html")
    assert (tmp_path / ".local" / "report.html").read_text(encoding="utf-8").startswith("<!doctype html>")


def test_without_the_charting_libraries_the_reason_says_what_to_install(filled_warehouse, use, monkeypatch, capsys):
    use(filled_warehouse)
    monkeypatch.setitem(sys.modules, "vl_convert", None)   # what `import` meets when the package is absent
    assert main(["report"]) == 1
    assert "vl_convert: pip install -r requirements-local.txt" in capsys.readouterr().err


def test_without_exchange_rates_the_gbp_figures_say_so_and_claim_nothing(filled_warehouse, use, tmp_path, capsys,
                                                                         run_sql):
    run_sql(filled_warehouse, "DELETE FROM fact_exchange_rate")
    use(filled_warehouse)
    text, page = report(filled_warehouse, tmp_path, capsys)
    assert "4 orders, none valued: the warehouse holds no exchange rate for their payment dates" in text
    assert 'data-kpi="sales_gbp"><div class="label">Sales, GBP</div><div class="value">£ -</div>' in text
    assert 'data-kpi="receivable_gbp"><div class="label">Payments to receive, GBP</div><div class="value">£ -' in text
    assert "1 not valued: no rate stored for their currency" in text
    assert page.tables["currency"][0] == ["GBP", "Pound Sterling", "3", "22", "63.97"]   # as sold, still there
