"""The local stand-in for the FX rates API (contract §9): a real HTTP server on a loopback port.

It serves the rates of a dataset the repository ships (`fx_rates.csv`: GBP-based, working days
only, made by `generate_dataset`) in the Frankfurter shape, `GET /{start}..{end}?base=GBP&symbols=…`,
and behaves as Frankfurter documents (readme_files/fx.md compares the two):
- a range is answered in pages of at most `page_days` calendar days (shorter than asked); the
  answer's `end_date` is its last published day, and the client asks again from the day after;
- a range that starts on a day with no rate starts from the working day before it;
- an unknown currency is 404, a base other than GBP 422, a range with no rate at all 404;
- `latest` (a date) hides every day after it, as the real API has nothing after today.
Fault switches (`set_fault`, or `POST /_faults` with the same JSON, `DELETE /_faults` to clear)
make the next answers fail: `500`, `503` or `429` (with `Retry-After`), `slow` (an answer `delay`
seconds late), `malformed` (not JSON), `nested` (the answer's rates 50,000 arrays deep: 100 KB that
a JSON decoder cannot descend), `negative` (a negative rate), `missing` (the first symbol left
out of the first day asked), and two hostile servers (contract §9 "Bounded work"): `drip` (the answer one byte every
`delay` seconds, headers first or, with `headers`, the headers too) and `huge` (`size` bytes of
blanks before the answer, with no Content-Length, as an endless stream would). `after` answers
that many requests normally first; `times` limits how many fail (default: all). `requests`
records each rates request's path, for tests.

`totesys-etl up` runs it as a process of its own (`python -m totesys_etl.local.services.fx_api
--port N`), tests in a thread (`FxApi.start()`).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from totesys_etl.local.services.servers import BackgroundServer

DATASET = Path(__file__).with_name("fx_rates.csv")
#: The dataset's span and currencies: the seeded and snapshot currencies, and two more.
FIRST_DAY, LAST_DAY = date(2021, 1, 1), date(2027, 12, 31)
START_RATES = {"USD": 1.3512, "EUR": 1.1241, "CHF": 1.2087, "JPY": 139.87}
PAGE_DAYS = 120
FAULTS = ("500", "503", "429", "slow", "malformed", "nested", "negative", "missing", "drip", "huge")
#: How deep the `nested` fault's rates go: far past what CPython's JSON decoder descends (about 1,000).
NESTED_DEPTH = 50_000


def _holiday(day: date) -> bool:
    """Weekends and the fixed TARGET closing days (Easter is left out: the shape matters, not the calendar)."""
    return day.weekday() >= 5 or (day.month, day.day) in ((1, 1), (5, 1), (12, 25), (12, 26))


def generate_dataset() -> str:
    """The shipped dataset's text: a seeded random walk per currency, 4 decimals (5 significant
    digits for JPY, as the ECB publishes), working days only."""
    rng = random.Random(28)  # nosec B311 - test data, not security
    level = dict(START_RATES)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", *level])
    day = FIRST_DAY
    while day <= LAST_DAY:
        if not _holiday(day):
            for code in level:
                level[code] *= 1 + rng.gauss(0, 0.004)
            writer.writerow([day.isoformat(), *(f"{v:.2f}" if v >= 100 else f"{v:.4f}" for v in level.values())])
        day += timedelta(days=1)
    return out.getvalue()


def load_dataset(path: Path = DATASET) -> dict[date, dict[str, str]]:
    """Day -> symbol -> rate text, exactly as the file holds it."""
    with open(path, newline="") as f:
        return {date.fromisoformat(r.pop("date")): r for r in csv.DictReader(f)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that gave up (the `slow` fault's timeout) is expected, not an error to print."""


class FxApi:
    """The stand-in server; `url` is what TOTESYS_FX_API_URL names."""

    def __init__(self, server: _Server, rates: dict[date, dict[str, str]], page_days: int):
        self.server, self.rates, self.page_days = server, rates, page_days
        self.days = sorted(rates)
        self.latest: date | None = None
        self.requests: list[str] = []
        self._fault: dict | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        server.api = self

    @classmethod
    def create(cls, port: int = 0, dataset: Path = DATASET, page_days: int = PAGE_DAYS) -> "FxApi":
        return cls(_Server(("127.0.0.1", port), _Handler), load_dataset(dataset), page_days)

    @classmethod
    def start(cls, port: int = 0, dataset: Path = DATASET, page_days: int = PAGE_DAYS) -> "FxApi":
        """Serve in a daemon thread of this process."""
        api = cls.create(port, dataset, page_days)
        api._thread = threading.Thread(target=api.server.serve_forever, name="fx-api", daemon=True)
        api._thread.start()
        return api

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def set_fault(self, mode: str | None, times: int | None = None, after: int = 0, retry_after: int = 1,
                  delay: float = 2.0, headers: bool = False, size: int = 64 << 20) -> None:
        """Make answers fail from the `after`-th request on, `times` of them (None: every one)."""
        if mode is not None and mode not in FAULTS:
            raise ValueError(f"unknown fault {mode!r}; one of {', '.join(FAULTS)}")
        with self._lock:
            self._fault = None if mode is None else {"mode": mode, "times": times, "after": after,
                                                     "retry_after": retry_after, "delay": delay, "seen": 0,
                                                     "headers": headers, "size": size}

    def _take_fault(self) -> dict | None:
        with self._lock:
            fault = self._fault
            if fault is None:
                return None
            fault["seen"] += 1
            if fault["seen"] <= fault["after"]:
                return None
            if fault["times"] is not None and fault["seen"] > fault["after"] + fault["times"]:
                return None
            return dict(fault)

    def answer(self, start: date, end: date, base: str, symbols: list[str]) -> tuple[int, dict]:
        """(status, body) for a rates request, without faults."""
        if base != "GBP":
            return 422, {"message": f"this stand-in serves base GBP only, not {base}"}
        known = set(self.rates[self.days[0]]) if self.days else set()
        if not symbols or any(s not in known for s in symbols):
            return 404, {"message": "not found"}
        last = min(end, start + timedelta(days=self.page_days - 1), self.latest or LAST_DAY)
        served = [d for d in self.days if start <= d <= last]
        before = [d for d in self.days if d < start and (self.latest is None or d <= self.latest)]
        if (not served or served[0] > start) and before:
            served.insert(0, before[-1])  # Frankfurter: a range starts from the working day before
        if not served:
            return 404, {"message": "not found"}
        return 200, {"amount": 1.0, "base": "GBP", "start_date": served[0].isoformat(),
                     "end_date": served[-1].isoformat(),
                     "rates": {d.isoformat(): {s: self.rates[d][s] for s in symbols} for d in served}}


def _dumps(body: dict) -> bytes:
    """JSON whose rates are the dataset's own digits, written as JSON numbers (never through a float)."""
    rates = body.get("rates")
    if rates is None:
        return json.dumps(body, separators=(",", ":")).encode()
    head = json.dumps({k: v for k, v in body.items() if k != "rates"}, separators=(",", ":"))[:-1]
    days = ",".join(f'"{day}":{{' + ",".join(f'"{s}":{text}' for s, text in by_symbol.items()) + "}"
                    for day, by_symbol in rates.items())
    return f'{head},"rates":{{{days}}}}}'.encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "totesys-fx-standin/1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: tests and `up` need no access log
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, status: int, body: bytes, delay: float, headers: bool) -> None:
        """The answer a byte every `delay` seconds (each read of the client's succeeds), until it hangs up."""
        head = (f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.close_connection = True
        if not headers:
            self.wfile.write(head)
            head = b""
        try:
            for byte in head + body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(delay)
        except OSError:  # the client gave up: what the fault is for
            pass

    def _huge(self, status: int, body: bytes, size: int) -> None:
        """`size` blanks, then the answer, with no Content-Length: only a cap on the client stops it."""
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        block = b" " * (1 << 16)
        try:
            for _ in range(size // len(block)):
                self.wfile.write(block)
            self.wfile.write(body)
        except OSError:
            pass

    def do_POST(self):  # noqa: N802 - the stdlib's name
        api: FxApi = self.server.api
        if urlsplit(self.path).path != "/_faults":
            return self._send(404, b'{"message":"not found"}')
        try:
            settings = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            api.set_fault(**settings)
        except (TypeError, ValueError) as e:
            return self._send(400, _dumps({"message": str(e)}))
        self._send(200, b'{"ok":true}')

    def do_DELETE(self):  # noqa: N802
        self.server.api.set_fault(None)
        self._send(200, b'{"ok":true}')

    def do_GET(self):  # noqa: N802
        api: FxApi = self.server.api
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        try:
            start_text, end_text = parts.path.strip("/").split("..")
            start, end = date.fromisoformat(start_text), date.fromisoformat(end_text)
        except ValueError:
            return self._send(404, b'{"message":"not found"}')
        api.requests.append(self.path)
        fault = api._take_fault()
        mode = fault["mode"] if fault else None
        if mode in ("500", "503", "429"):
            headers = {"Retry-After": str(int(fault["retry_after"]))} if mode != "500" else None
            return self._send(int(mode), _dumps({"message": f"fault {mode}"}), headers)
        if mode == "slow":
            time.sleep(fault["delay"])
        symbols = [s for s in ",".join(query.get("symbols", [])).split(",") if s]
        status, body = api.answer(start, end, query.get("base", ["EUR"])[0], symbols)
        if mode == "drip":
            return self._drip(status, _dumps(body), fault["delay"], fault["headers"])
        if mode == "huge":
            return self._huge(status, _dumps(body), fault["size"])
        if status == 200 and mode == "malformed":
            return self._send(200, _dumps(body)[:-7] + b"<html>")
        if status == 200 and mode == "nested":
            head = _dumps({k: v for k, v in body.items() if k != "rates"})[:-1]
            return self._send(200, head + b',"rates":' + b"[" * NESTED_DEPTH + b"]" * NESTED_DEPTH + b"}")
        if status == 200 and mode in ("negative", "missing"):
            first = next(iter(body["rates"].values()))
            symbol = next(iter(first))
            if mode == "negative":
                first[symbol] = "-" + first[symbol]
            else:  # from the first day asked (not the working day before it, which an earlier page held)
                asked = [r for d, r in body["rates"].items() if date.fromisoformat(d) >= start] or [first]
                del asked[0][symbol]
        self._send(status, _dumps(body))


@dataclass
class FxApiProcess(BackgroundServer):
    """The stand-in as `up` runs it: a process of its own that outlives the command, found by pid."""

    MARKER: ClassVar[bytes] = __name__.encode()

    @classmethod
    def start(cls, port: int, log_path: Path | None = None) -> "FxApiProcess":
        return cls(port, cls.spawn([sys.executable, "-m", __name__, "--port", str(port)], port, log_path))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--write-dataset", action="store_true", help="regenerate fx_rates.csv and exit")
    args = parser.parse_args(argv)
    if args.write_dataset:
        DATASET.write_text(generate_dataset())
        return
    api = FxApi.create(args.port)
    api.server.serve_forever()


if __name__ == "__main__":
    main()
