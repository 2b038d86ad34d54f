"""Report fixtures: warehouses with known rows, and a real headless Chromium driven over the DevTools
protocol (Debian's `/usr/bin/chromium`, which `make dev-setup` installs when it is missing).

The browser is Chromium itself, not a stand-in: it parses the page, applies its Content-Security-Policy,
lays it out and reports every request and console message it sees.
"""
from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pg8000.native
import pytest
import websocket

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.load.migrations import migrate

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--remote-debugging-port=0")


def known_rows():
    """test/schema/test_views.py (its known rows and hand rule), imported by path: pytest's importlib
    mode gives tests no shared package."""
    spec = importlib.util.spec_from_file_location("totesys_test_views", Path(__file__).parents[1] / "schema" /
                                                  "test_views.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def filled_warehouse(warehouse_url):
    """A migrated warehouse holding test_views' known rows (several versions of one order, hostile names)."""
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    try:
        migrate(conn)
        known_rows().fill(conn)
    finally:
        conn.close()
    return warehouse_url


#: A warehouse like a business's after a few years up to today (realistic magnitudes, three currencies,
#: a gap of four months, designs and customers sharing names, long country names, rates that stop ten
#: days before today, payments outstanding of every age), written straight into a migrated warehouse:
#: no pipeline to wait for.
BUSY_ROWS = """
INSERT INTO dim_currency VALUES (1, 'GBP', 'Pound Sterling'), (2, 'USD', 'US Dollar'), (3, 'EUR', 'Euro');
INSERT INTO dim_payment_type VALUES (1, 'SALES_RECEIPT'), (2, 'SALES_REFUND'), (3, 'PURCHASE_PAYMENT'),
    (4, 'PURCHASE_REFUND');
INSERT INTO dim_design (design_id, design_name, file_location, file_name)
    SELECT g, (ARRAY['Bronze', 'Plastic', 'Hand-made ✂️', 'Café-style', 'Wooden'])[1 + g % 5], '/usr', 'f.json'
    FROM generate_series(1, 60) g;
INSERT INTO dim_location (location_id, address_line_1, address_line_2, district, city, postal_code, country, phone)
    SELECT g, g || ' High Street', NULL, NULL, 'Leeds', 'LS1', (ARRAY['Saint Vincent and the Grenadines',
        'United Kingdom', 'Democratic Republic of the Congo', 'Bosnia and Herzegovina', 'France', 'Germany',
        'Micronesia, Federated States of', 'Poland', 'Ireland', 'Iceland', 'Japan', 'Brazil'])[1 + g % 12], '0113'
    FROM generate_series(1, 30) g;
INSERT INTO dim_counterparty SELECT g, (ARRAY['Leannon, Predovic and Morar', 'Fahey and Sons',
        'Café Société 🛍️ Ltd', 'Armstrong, Champlin and Hahn Incorporated', 'Kohler - Hane'])[1 + g % 5],
    '1 Road', NULL, NULL, 'Leeds', 'LS1', 'United Kingdom', '0113' FROM generate_series(1, 25) g;
INSERT INTO dim_staff (staff_id, first_name, last_name, department_name, location, email_address)
    SELECT g, 'Siobhán', 'Ó Súilleabháin-' || g, (ARRAY['Sales', 'Purchasing', 'Production', 'Dispatch',
        'Finance', 'Facilities', 'Communications', 'HR'])[1 + g % 8], 'Leeds', 'e' FROM generate_series(1, 20) g;
INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, last_updated_date, last_updated_time,
        sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date,
        agreed_delivery_date, agreed_delivery_location_id, etl_run_id)
    SELECT g, d, '10:00', d, '10:00', 1 + g % 20, 1 + g % 25, 1000 + (g * 7919) % 99001,
        (200 + (g * 104729) % 201) / 100.0, 1 + g % 3, 1 + (g * 31) % 60, d + g % 7, d + g % 8, 1 + g % 30,
        '20260101T000000000000Z'
    FROM generate_series(1, 3000) g, LATERAL (SELECT CURRENT_DATE - 1290 + (g * 1289 / 3000) AS d) x
    WHERE NOT d BETWEEN CURRENT_DATE - 820 AND CURRENT_DATE - 700;
INSERT INTO fact_purchase_order (purchase_order_id, created_date, created_time, last_updated_date, last_updated_time,
        staff_id, counterparty_id, item_code, item_quantity, item_unit_price, currency_id, agreed_delivery_date,
        agreed_payment_date, agreed_delivery_location_id, etl_run_id)
    SELECT g, d, '11:00', d, '11:00', 1 + g % 20, 1 + g % 25, 'ABC1234', 1 + (g * 7919) % 1000,
        (100 + (g * 104729) % 99901) / 100.0, 1 + g % 3, d + g % 8, d + g % 7, 1 + g % 30, '20260101T000000000000Z'
    FROM generate_series(1, 1000) g, LATERAL (SELECT CURRENT_DATE - 1290 + (g * 1289 / 1000) AS d) x
    WHERE NOT d BETWEEN CURRENT_DATE - 820 AND CURRENT_DATE - 700;
INSERT INTO fact_payment (payment_id, created_date, created_time, last_updated_date, last_updated_time,
        transaction_id, counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date, etl_run_id)
    SELECT sales_order_id, created_date, '10:30', created_date, '10:30', sales_order_id, counterparty_id,
        units_sold * unit_price, currency_id, CASE WHEN sales_order_id % 20 = 0 THEN 2 ELSE 1 END,
        sales_order_id % 9 <> 0 AND agreed_payment_date < CURRENT_DATE - 20, agreed_payment_date,
        '20260101T000000000000Z' FROM fact_sales_order;
INSERT INTO fact_exchange_rate (rate_date, currency_id, units_per_gbp, carried, etl_run_id)
    SELECT d, c, CASE c WHEN 1 THEN 1 WHEN 2 THEN 1.2 + (extract(doy FROM d) % 20) / 100.0
        ELSE 1.1 + (extract(doy FROM d) % 10) / 100.0 END, c > 1 AND extract(isodow FROM d) > 5,
        '20260101T000000000000Z'
    FROM generate_series(CURRENT_DATE - 1300, CURRENT_DATE - 10, INTERVAL '1 day') d, generate_series(1, 3) c;
INSERT INTO fact_delivery (event_id, sales_order_id, status, event_date, event_time, city, courier, etl_run_id)
    SELECT 'e' || sales_order_id, sales_order_id, 'delivered', agreed_delivery_date + sales_order_id % 3 - 1,
        '12:00', 'Leeds', (ARRAY['DPD', 'Royal Mail', 'Parcelforce Worldwide', 'Evri'])[1 + sales_order_id % 4],
        '20260101T000000000000Z' FROM fact_sales_order WHERE sales_order_id % 3 = 0;
INSERT INTO etl_load_ledger (run_id, loaded_at, rows)
    VALUES ('20260101T000000000000Z', now() - INTERVAL '2 hours', '{}');
"""


@pytest.fixture
def busy_warehouse(warehouse_url):
    """A migrated warehouse holding BUSY_ROWS."""
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    try:
        migrate(conn)
        for statement in BUSY_ROWS.split(";"):
            if statement.strip():
                conn.run(statement)
    finally:
        conn.close()
    return warehouse_url


class Page:
    """One browser tab: DevTools commands, and every event it sent, kept for the test to read."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params) -> dict:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def open(self, url: str, width: int = 1280, height: int = 900, mobile: bool = False) -> None:
        self.events.clear()
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=mobile)
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.evaluate("new Promise(r => setTimeout(r, 200))")  # late console messages arrive too

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def errors(self) -> list:
        """Console errors, uncaught exceptions and browser log errors (a CSP violation is one)."""
        return ([e["params"] for e in self.events if e.get("method") == "Runtime.exceptionThrown"]
                + [e["params"] for e in self.events if e.get("method") == "Runtime.consoleAPICalled"
                   and e["params"]["type"] in ("error", "assert", "warning")]
                + [e["params"]["entry"] for e in self.events if e.get("method") == "Log.entryAdded"
                   and e["params"]["entry"]["level"] in ("error", "warning")])

    def screenshot(self, path: Path, width: int = 1280, height: int | None = None) -> None:
        """A PNG of the page at `width`: its top `height` pixels, or all of it."""
        full = height is None
        height = height or int(self.evaluate("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=full)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.close()


class Chromium:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="totesys-chromium-")
        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])

    def page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as response:  # nosec
            targets = json.load(response)
        return Page(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="session")
def chromium():
    browser = Chromium()
    yield browser
    browser.close()


@pytest.fixture
def page(chromium):
    tab = chromium.page()
    yield tab
    tab.close()


#: Reads the page back: every table's cells, every key figure, the marks of every chart.
READ_PAGE = """(() => ({
  scripts: document.scripts.length,
  state: (document.querySelector('[data-state]') || {}).textContent || null,
  freshness: document.querySelector('[data-freshness]').textContent,
  kpis: Object.fromEntries([...document.querySelectorAll('[data-kpi]')].map(
      k => [k.dataset.kpi, k.querySelector('.value').textContent])),
  kpi_exact: Object.fromEntries([...document.querySelectorAll('[data-kpi]')].map(
      k => [k.dataset.kpi, k.querySelector('.value').dataset.exact || null])),
  exact: Object.fromEntries([...document.querySelectorAll('table[data-section]')].map(
      t => [t.dataset.section, [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.dataset.exact || null))])),
  tables: Object.fromEntries([...document.querySelectorAll('table[data-section]')].map(
      t => [t.dataset.section, [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent))])),
  charts: Object.fromEntries([...document.querySelectorAll('figure[data-chart]')].map(
      f => [f.dataset.chart, (s => ({marks: s.querySelectorAll('g.role-mark path, g.role-mark line').length,
                                     width: s.getBoundingClientRect().width}))(
          [...f.querySelectorAll('svg')].find(s => getComputedStyle(s).display !== 'none'))])),
  overflow: document.documentElement.scrollWidth - window.innerWidth,
}))()"""

#: Every visible text of every chart: its box on screen, and its font size as drawn (the SVG's scale included).
CHART_TEXT = """(() => {
  const shown = el => { for (; el && el.nodeType === 1; el = el.parentNode) {
      const style = getComputedStyle(el);
      if (style.display === 'none' || style.visibility === 'hidden' || parseFloat(style.opacity) === 0
          || el.getAttribute('opacity') === '0') return false; } return true; };
  return [...document.querySelectorAll('figure[data-chart] svg text')].filter(
      t => t.textContent.trim() && shown(t)).map(t => { const b = t.getBoundingClientRect();
    return {chart: t.closest('figure').dataset.chart, text: t.textContent, left: b.left, top: b.top,
            right: b.right, bottom: b.bottom,
            px: parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a}; });
})()"""

#: Each table that is wider than its box, and whether the page says it scrolls there.
WIDE_TABLES = """[...document.querySelectorAll('table[data-section]')].filter(
    t => t.closest('.scroll').scrollWidth > t.closest('.scroll').clientWidth + 1).map(t => ({
  section: t.dataset.section,
  cue: [...t.closest('section').querySelectorAll('.scroll-cue')].some(c => getComputedStyle(c).display !== 'none'),
}))"""


def overlapping(texts: list[dict], tolerance: float = 0.5) -> list[tuple[str, str, str]]:
    """Pairs of text boxes of one chart that overlap by more than `tolerance` pixels both ways."""
    pairs = []
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            if a["chart"] == b["chart"] and min(a["right"], b["right"]) - max(a["left"], b["left"]) > tolerance \
                    and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > tolerance:
                pairs.append((a["chart"], a["text"], b["text"]))
    return pairs
