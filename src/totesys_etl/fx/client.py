"""GET a range of daily rates from a Frankfurter-shaped API, page after page (contract §9).

`GET {base_url}/{start}..{end}?base=GBP&symbols=USD,EUR` answers at most the range asked, and may
answer a shorter one (its `end_date`); the client then asks again from the day after. urllib3 (the
HTTP library botocore already uses) gives timeouts and a retry policy: 429 and 503 are retried a
few times, waiting what `Retry-After` says (capped, so a Lambda never sleeps out its time), with a
short backoff when the header is absent; a connection refused is retried twice. Every other
failure (another status, a read timeout, a body that is not the contract's shape) raises at once:
the caller stops at the day it could not get.
"""
from __future__ import annotations

import os
from datetime import date, timedelta
from typing import Iterator, Mapping

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util import Retry, Timeout

from totesys_etl.config import seconds_setting
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


class Client:
    """One pool of connections to the API for a run."""

    def __init__(self, base_url: str, read_seconds: float | None = None):
        if read_seconds is None:
            read_seconds = seconds_setting(os.environ, TIMEOUT_VARIABLE, READ_SECONDS)
        self.base_url = base_url.rstrip("/")
        self.pool = urllib3.PoolManager(retries=retry_policy(), timeout=Timeout(connect=CONNECT_SECONDS,
                                                                                read=read_seconds))

    def get(self, start: date, end: date, symbols: list[str]) -> tuple[int, bytes]:
        """(status, body) of one request; FxUnavailable when no answer came (refused, timed out)."""
        url = f"{self.base_url}/{start.isoformat()}..{end.isoformat()}"
        try:
            response = self.pool.request("GET", url, fields={"base": BASE, "symbols": ",".join(symbols)},
                                         headers={"Accept": "application/json"})
        except HTTPError as e:
            raise FxUnavailable(f"FX API request {start}..{end} failed: {type(e).__name__}") from None
        return response.status, response.data

    def pages(self, start: date, end: date, symbols: list[str]) -> Iterator[Page]:
        """Every page of `start..end` in order; raises FxUnavailable (or BadBody, which carries the
        body) at the first page it cannot get. Pages already yielded stay good."""
        asked = start
        for _ in range(MAX_PAGES):
            if asked > end:
                return
            status, body = self.get(asked, end, symbols)
            if status != 200:
                raise FxUnavailable(f"FX API answered HTTP {status} for {asked}..{end}")
            page = parse_page(body, symbols, asked, end)
            yield page
            if page.end >= end or page.end < asked:  # all asked for, or nothing published from `asked` on
                return
            asked = page.end + timedelta(days=1)
        raise FxUnavailable(f"FX API served more than {MAX_PAGES} pages for {start}..{end}")


__all__ = ["BadBody", "Client", "FxUnavailable", "api_url"]
