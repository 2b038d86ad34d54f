"""GET a range of daily rates from a Frankfurter-shaped API, page after page (contract §9).

`GET {base_url}/{start}..{end}?base=GBP&symbols=USD,EUR` answers at most the range asked, and may
answer a shorter one (its `end_date`); the client then asks again from the day after. urllib3 (the
HTTP library botocore already uses) gives timeouts and a retry policy: 429 and 503 are retried a
few times, waiting what `Retry-After` says (capped, so a Lambda never sleeps out its time), with a
short backoff when the header is absent; a connection refused is retried twice. Every other
failure (another status, a read timeout, a body that is not the contract's shape) raises at once:
the caller stops at the day it could not get.

Bounded work (contract §9): the API is someone else's server, so a per-read timeout is not enough (a
server that sends a byte every few seconds never trips it). Each request, retries included, has a
total deadline (TOTESYS_FX_DEADLINE_SECONDS, default 60 s): a watchdog shuts the request's socket
down when it passes, whatever phase the request is in (headers or body), so the blocked read fails
at once. The body is read in chunks and at most TOTESYS_FX_MAX_BYTES (default 10 MiB; a real page
is a few kB per currency-year) is ever held: a longer answer fails the request.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from datetime import date, timedelta
from typing import Iterator, Mapping

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError
from urllib3.util import Retry, Timeout

from totesys_etl.config import seconds_setting, whole_number_setting
from totesys_etl.errors import FxUnavailable
from totesys_etl.fx.rates import BASE, BadBody, Page, parse_page

URL_VARIABLE = "TOTESYS_FX_API_URL"
TIMEOUT_VARIABLE = "TOTESYS_FX_TIMEOUT_SECONDS"
#: Seconds to wait for a connection and for each read of an answer (TIMEOUT_VARIABLE overrides the read).
CONNECT_SECONDS, READ_SECONDS = 5.0, 20.0
#: The longest `Retry-After` honoured per retry; a longer one is cut to this.
MAX_RETRY_AFTER = 30.0
#: A server that keeps answering pages that do not move forward is stopped after this many.
MAX_PAGES = 1000
DEADLINE_VARIABLE, MAX_BYTES_VARIABLE = "TOTESYS_FX_DEADLINE_SECONDS", "TOTESYS_FX_MAX_BYTES"
#: contract §9: the longest one request may take, retries included, and the largest body read.
DEADLINE_SECONDS, MAX_BODY_BYTES = 60.0, 10 << 20
_BODY_CHUNK = 1 << 16


class NotServed(FxUnavailable):
    """HTTP 404 for a symbol list from `asked` on: one of the currencies may be one the API does not
    serve (Frankfurter answers an unknown symbol so); `serves` asks for each alone to tell which."""

    def __init__(self, message: str, asked: date):
        super().__init__(message)
        self.asked = asked


class _Deadline:
    """The sockets one request uses, shut down when its deadline passes (the module's docstring).

    `shutdown` (not `close`) is what wakes a read blocked in another thread: it then sees the end
    of the stream, and urllib3 raises, as for a connection the server dropped.
    """

    _current = threading.local()

    def __init__(self, seconds: float):
        self.seconds, self.passed = seconds, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        _Deadline._current.value = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _Deadline._current.value = None

    @classmethod
    def watch(cls, sock: socket.socket | None) -> None:
        """Called as a request waits for its answer: this socket is shut down at the deadline."""
        deadline = getattr(cls._current, "value", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            deadline._sockets.append(sock)
            if deadline.passed:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed: nothing left to stop
        pass


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self):
        _Deadline.watch(self.sock)  # the status line, the headers and the body are all read after this
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self):
        _Deadline.watch(self.sock)
        return super().getresponse()


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Retry(Retry):
    """urllib3's Retry with `Retry-After` capped at MAX_RETRY_AFTER."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), MAX_RETRY_AFTER)


def retry_policy() -> Retry:
    return _Retry(total=5, connect=2, read=0, status=3, other=0, redirect=0, allowed_methods=frozenset({"GET"}),
                  status_forcelist=frozenset({429, 503}), backoff_factor=0.2, respect_retry_after_header=True,
                  raise_on_status=False)


def api_url(env: Mapping[str, str] | None = None) -> str | None:
    """The API's base URL, or None when the FX source is off (the variable unset or empty)."""
    env = os.environ if env is None else env
    return (env.get(URL_VARIABLE) or "").strip().rstrip("/") or None


def max_bytes_setting(env: Mapping[str, str]) -> int:
    """TOTESYS_FX_MAX_BYTES: a whole number of bytes >= 1 (default MAX_BODY_BYTES); exit 2 otherwise."""
    return whole_number_setting(env, MAX_BYTES_VARIABLE, MAX_BODY_BYTES, "bytes")


class Client:
    """One pool of connections to the API for a run."""

    def __init__(self, base_url: str, read_seconds: float | None = None, deadline_seconds: float | None = None,
                 max_bytes: int | None = None):
        if read_seconds is None:
            read_seconds = seconds_setting(os.environ, TIMEOUT_VARIABLE, READ_SECONDS)
        self.deadline_seconds = seconds_setting(os.environ, DEADLINE_VARIABLE, DEADLINE_SECONDS) \
            if deadline_seconds is None else deadline_seconds
        self.max_bytes = max_bytes_setting(os.environ) if max_bytes is None else max_bytes
        self.base_url = base_url.rstrip("/")
        self.pool = urllib3.PoolManager(retries=retry_policy(), timeout=Timeout(connect=CONNECT_SECONDS,
                                                                                read=read_seconds))
        self.pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def get(self, start: date, end: date, symbols: list[str]) -> tuple[int, bytes]:
        """(status, body) of one request; FxUnavailable when no whole answer came (refused, timed out,
        past the deadline, a body over the cap)."""
        url = f"{self.base_url}/{start.isoformat()}..{end.isoformat()}"
        started = time.monotonic()
        with _Deadline(self.deadline_seconds) as deadline:
            try:
                response = self.pool.request("GET", url, fields={"base": BASE, "symbols": ",".join(symbols)},
                                             headers={"Accept": "application/json"}, preload_content=False)
                try:
                    body = self._body(response, start, end)
                finally:
                    response.release_conn()
            except HTTPError as e:
                if deadline.passed:
                    raise FxUnavailable(f"FX API request {start}..{end} gave no whole answer within its "
                                        f"{self.deadline_seconds:g} s deadline ({DEADLINE_VARIABLE})") from None
                raise FxUnavailable(f"FX API request {start}..{end} failed: {type(e).__name__} after "
                                    f"{time.monotonic() - started:.1f} s") from None
        return response.status, body

    def _body(self, response, start: date, end: date) -> bytes:
        """The answer's body, read in chunks, never more than `max_bytes` of it held."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()  # not read: the connection is dropped, never reused half-read
            raise FxUnavailable(f"FX API answer to {start}..{end} is {int(declared):,} bytes, over the "
                                f"{self.max_bytes:,}-byte cap ({MAX_BYTES_VARIABLE})")
        parts, size = [], 0
        for part in response.stream(_BODY_CHUNK):
            size += len(part)
            if size > self.max_bytes:
                response.close()
                raise FxUnavailable(f"FX API answer to {start}..{end} is more than {self.max_bytes:,} bytes, "
                                    f"the cap ({MAX_BYTES_VARIABLE})")
            parts.append(part)
        return b"".join(parts)

    def pages(self, start: date, end: date, symbols: list[str]) -> Iterator[Page]:
        """Every page of `start..end` in order; raises FxUnavailable (or BadBody, which carries the
        body) at the first page it cannot get. Pages already yielded stay good."""
        asked = start
        for _ in range(MAX_PAGES):
            if asked > end:
                return
            status, body = self.get(asked, end, symbols)
            if status == 404:
                raise NotServed(f"FX API answered HTTP 404 for {asked}..{end}", asked)
            if status != 200:
                raise FxUnavailable(f"FX API answered HTTP {status} for {asked}..{end}")
            page = parse_page(body, symbols, asked, end)
            yield page
            if page.end >= end or page.end < asked:  # all asked for, or nothing published from `asked` on
                return
            asked = page.end + timedelta(days=1)
        raise FxUnavailable(f"FX API served more than {MAX_PAGES} pages for {start}..{end}")

    def serves(self, start: date, end: date, symbol: str) -> bool:
        """Whether the API answers `symbol` alone for `start..end` (False: HTTP 404); FxUnavailable
        for any other failure, which says nothing about the currency."""
        status, _ = self.get(start, end, [symbol])
        if status not in (200, 404):
            raise FxUnavailable(f"FX API answered HTTP {status} for {symbol} alone, {start}..{end}")
        return status == 200


__all__ = ["BadBody", "Client", "FxUnavailable", "NotServed", "api_url"]
