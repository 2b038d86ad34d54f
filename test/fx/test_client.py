"""The FX client (fx/client.py) against the local stand-in, a real HTTP server on loopback."""
import time
from datetime import date

import pytest

from totesys_etl.errors import FxUnavailable
from totesys_etl.fx import client as fx_client
from totesys_etl.fx.client import Client, api_url
from totesys_etl.fx.rates import BadBody

SYMBOLS = ["EUR", "USD"]


def test_a_range_is_fetched_page_by_page_from_the_day_after_each_answer(fx_api):
    pages = list(Client(fx_api.url).pages(date(2024, 1, 6), date(2024, 6, 30), SYMBOLS))
    assert len(pages) == len(fx_api.requests) > 2
    assert pages[0].start == date(2024, 1, 5)  # a Saturday: served from the Friday before, as Frankfurter does
    for i, before in enumerate(pages[:-1]):  # each next request asks from the day after the answer's end_date
        assert fx_api.requests[i + 1].startswith(f"/{date.fromordinal(before.end.toordinal() + 1).isoformat()}..")
    days = sorted({d for p in pages for d in p.rates})
    assert all(d.weekday() < 5 for d in days) and len(days) > 100
    assert max(days) == date(2024, 6, 28)


def test_the_client_stops_where_the_api_has_nothing_newer(fx_api):
    fx_api.latest = date(2024, 1, 5)
    pages = list(Client(fx_api.url).pages(date(2024, 1, 5), date(2024, 1, 9), SYMBOLS))
    # A short answer may be a page or the end of what is published: asking once more from the day
    # after tells them apart (the answer ends before the day asked), and the client stops there.
    assert [p.end for p in pages] == [date(2024, 1, 5), date(2024, 1, 5)]
    assert len(fx_api.requests) == 2


@pytest.mark.parametrize("status", ["429", "503"])
def test_429_and_503_wait_for_retry_after_then_succeed(fx_api, status):
    fx_api.set_fault(status, times=2, retry_after=1)
    started = time.monotonic()
    pages = list(Client(fx_api.url).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))
    assert time.monotonic() - started >= 2  # two waits of Retry-After: 1
    assert len(pages) == 1 and len(fx_api.requests) == 3


def test_a_long_retry_after_is_capped_and_a_lasting_429_fails(fx_api, monkeypatch):
    monkeypatch.setattr(fx_client, "MAX_RETRY_AFTER", 0.2)
    fx_api.set_fault("429", retry_after=3600)
    started = time.monotonic()
    with pytest.raises(FxUnavailable, match="HTTP 429"):
        list(Client(fx_api.url).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))
    assert time.monotonic() - started < 5
    assert len(fx_api.requests) == 4  # the first try and three retries


def test_500_fails_at_once(fx_api):
    fx_api.set_fault("500")
    with pytest.raises(FxUnavailable, match="HTTP 500"):
        list(Client(fx_api.url).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))
    assert len(fx_api.requests) == 1


def test_a_slow_answer_times_out(fx_api):
    fx_api.set_fault("slow", delay=2)
    with pytest.raises(FxUnavailable, match="failed"):
        list(Client(fx_api.url, read_seconds=0.3).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))


def test_a_refused_connection_fails(closed_port):
    with pytest.raises(FxUnavailable, match="failed"):
        list(Client(f"http://127.0.0.1:{closed_port}").pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))


@pytest.mark.parametrize("fault, reason", [("malformed", "not JSON"), ("negative", "not positive"),
                                           ("nested", "^the body is nested too deep to decode$")])
def test_a_bad_body_fails_with_the_body(fx_api, fault, reason):
    fx_api.set_fault(fault, after=1)
    fetched = []
    with pytest.raises(BadBody, match=reason) as caught:
        for page in Client(fx_api.url).pages(date(2024, 1, 1), date(2024, 12, 31), SYMBOLS):
            fetched.append(page)
    assert len(fetched) == 1 and caught.value.body  # the page before it stays good


def test_the_url_comes_from_the_environment():
    assert api_url({}) is None and api_url({"TOTESYS_FX_API_URL": " "}) is None
    assert api_url({"TOTESYS_FX_API_URL": "http://x/v1/"}) == "http://x/v1"


@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_server_that_drips_is_stopped_at_the_total_deadline(fx_api, headers):
    """Issue 39: a byte every 0.2 s never trips the 2 s read timeout; the 1.5 s deadline stops it,
    whether the headers or the body drip (the real stand-in, real sockets)."""
    fx_api.set_fault("drip", delay=0.2, headers=headers)
    started = time.monotonic()
    with pytest.raises(FxUnavailable, match=r"no whole answer within its 1.5 s deadline \(TOTESYS_FX_DEADLINE"):
        list(Client(fx_api.url, read_seconds=2, deadline_seconds=1.5).pages(date(2024, 1, 8), date(2024, 1, 12),
                                                                            SYMBOLS))
    assert 1.5 <= time.monotonic() - started < 5


def test_the_deadline_comes_from_the_environment(fx_api, monkeypatch):
    monkeypatch.setenv("TOTESYS_FX_DEADLINE_SECONDS", "1")
    fx_api.set_fault("drip", delay=0.1)
    with pytest.raises(FxUnavailable, match="within its 1 s deadline"):
        list(Client(fx_api.url).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))
    assert Client(fx_api.url).deadline_seconds == 1 and Client(fx_api.url).max_bytes == 10 << 20


def test_a_huge_answer_is_cut_at_the_body_cap(fx_api, monkeypatch):
    """Issue 39: 64 MB of blanks with no Content-Length: the client holds at most the cap, then fails."""
    monkeypatch.setenv("TOTESYS_FX_MAX_BYTES", str(1 << 20))
    fx_api.set_fault("huge", size=64 << 20)
    started = time.monotonic()
    with pytest.raises(FxUnavailable, match=r"more than 1,048,576 bytes, the cap \(TOTESYS_FX_MAX_BYTES\)"):
        list(Client(fx_api.url).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))
    assert time.monotonic() - started < 5
    fx_api.set_fault("huge", size=1 << 19)  # under the cap: blanks before JSON are still JSON
    assert len(list(Client(fx_api.url).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))) == 1


def test_a_404_is_not_served_and_each_symbol_can_be_asked_alone(fx_api):
    """Frankfurter answers 404 for a list holding one symbol it does not serve; `serves` tells which."""
    client = Client(fx_api.url)
    with pytest.raises(fx_client.NotServed, match="HTTP 404") as caught:
        list(client.pages(date(2024, 1, 8), date(2024, 1, 12), ["EUR", "XYZ"]))
    assert caught.value.asked == date(2024, 1, 8)
    assert client.serves(date(2024, 1, 8), date(2024, 1, 12), "EUR")
    assert not client.serves(date(2024, 1, 8), date(2024, 1, 12), "XYZ")


def test_a_declared_length_over_the_cap_is_refused_unread(fx_api):
    with pytest.raises(FxUnavailable, match=r"is \d[\d,]* bytes, over the 100-byte cap"):
        list(Client(fx_api.url, max_bytes=100).pages(date(2024, 1, 8), date(2024, 1, 12), SYMBOLS))


@pytest.mark.parametrize("variable", ["TOTESYS_FX_MAX_BYTES", "TOTESYS_FX_DEADLINE_SECONDS"])
def test_a_malformed_bound_is_a_configuration_error(fx_api, monkeypatch, variable):
    from totesys_etl.errors import ConfigurationError

    monkeypatch.setenv(variable, "-1")
    with pytest.raises(ConfigurationError, match=variable):
        Client(fx_api.url)
