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
      f => [f.dataset.chart, {marks: f.querySelectorAll('g.role-mark path, g.role-mark line').length,
                              width: f.querySelector('svg').getBoundingClientRect().width}])),
  overflow: document.documentElement.scrollWidth - window.innerWidth,
}))()"""
