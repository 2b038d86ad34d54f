"""The checks of an answer and the day-by-day rows (fx/rates.py): pure functions, no server."""
import json
from datetime import date
from decimal import Decimal

import pytest

from totesys_etl.fx.rates import BadBody, Page, csv_text, currency_days, day_rows, parse_page

CURRENCIES = {"GBP": 1, "USD": 2, "EUR": 3}


def body(rates, start="2024-01-05", end="2024-01-09", base="GBP") -> bytes:
    return json.dumps({"amount": 1.0, "base": base, "start_date": start, "end_date": end, "rates": rates}).encode()


def test_a_page_keeps_the_rates_digits_exactly():
    page = parse_page(b'{"amount":1.0,"base":"GBP","start_date":"2024-01-05","end_date":"2024-01-08",'
                      b'"rates":{"2024-01-05":{"USD":1.27120,"EUR":1.1563},'
                      b'"2024-01-08":{"USD":2E0,"EUR":0.0000000001}}}',
                      ["USD", "EUR"], date(2024, 1, 6), date(2024, 1, 9))
    assert page.start == date(2024, 1, 5) and page.end == date(2024, 1, 8)  # the working day before is allowed
    assert page.rates[date(2024, 1, 5)] == {"USD": Decimal("1.27120"), "EUR": Decimal("1.1563")}
    assert str(page.rates[date(2024, 1, 5)]["USD"]) == "1.27120"  # never through a float


@pytest.mark.parametrize("text, reason", [
    (b"<html>", "JSON"),
    (b"[]", "not a JSON object"),
    (body({"2024-01-05": {"USD": 1.2, "EUR": 1.1}}, base="EUR"), "base"),
    (body({"2024-01-05": {"USD": -1.2, "EUR": 1.1}}), "not positive"),
    (body({"2024-01-05": {"USD": 0, "EUR": 1.1}}), "not positive"),
    (body({"2024-01-05": {"USD": "1.2", "EUR": 1.1}}), "not a number"),
    (body({"2024-01-05": {"USD": 1e25, "EUR": 1.1}}), "absurd"),
    (body({"2024-01-05": {"USD": 0.00000000001, "EUR": 1.1}}), "absurd"),
    (body({"2024-01-10": {"USD": 1.2, "EUR": 1.1}}), "after the range"),
    (body({"5 Jan 2024": {"USD": 1.2, "EUR": 1.1}}), "not a YYYY-MM-DD date"),
    (body({"2024-01-05": {"USD": 1.2, "EUR": 1.1}}, end="20240109"), "end_date"),
    (body([]), "rates is not an object"),
])
def test_a_body_not_of_the_contracts_shape_is_bad_and_kept_for_quarantine(text, reason):
    with pytest.raises(BadBody) as caught:
        parse_page(text, ["USD", "EUR"], date(2024, 1, 5), date(2024, 1, 9))
    assert reason in str(caught.value)
    assert caught.value.body == text


def _page(*days):
    return Page(days[0][0], days[-1][0], {d: {"USD": Decimal(u), "EUR": Decimal(e)} for d, u, e in days})


def test_first_rows_start_at_the_first_published_day_and_carry_non_working_days():
    page = _page((date(2024, 1, 5), "1.1", "1.2"), (date(2024, 1, 8), "1.3", "1.4"))
    rows, newest = day_rows([page], CURRENCIES, None, date(2024, 1, 4))
    assert newest == date(2024, 1, 8)
    assert [(r.rate_date.day, r.currency_id, str(r.units_per_gbp), r.carried) for r in rows] == [
        (5, 1, "1", False), (5, 2, "1.1", False), (5, 3, "1.2", False),
        (6, 1, "1", False), (6, 2, "1.1", True), (6, 3, "1.2", True),
        (7, 1, "1", False), (7, 2, "1.1", True), (7, 3, "1.2", True),
        (8, 1, "1", False), (8, 2, "1.3", False), (8, 3, "1.4", False)]


def test_a_published_day_before_the_earliest_fact_date_is_left_out():
    page = _page((date(2024, 1, 5), "1.1", "1.2"), (date(2024, 1, 8), "1.3", "1.4"))
    rows, newest = day_rows([page], CURRENCIES, None, date(2024, 1, 6))
    assert {r.rate_date for r in rows} == {date(2024, 1, 8)} and newest == date(2024, 1, 8)


def test_later_rows_start_the_day_after_the_watermark_carrying_its_rate():
    page = _page((date(2024, 1, 5), "1.1", "1.2"), (date(2024, 1, 8), "1.3", "1.4"))
    rows, newest = day_rows([page], CURRENCIES, date(2024, 1, 5), None)
    assert [r.rate_date.day for r in rows if r.currency_id == 2] == [6, 7, 8]
    assert [r.carried for r in rows if r.currency_id == 2] == [True, True, False]


def test_nothing_new_gives_no_rows_and_no_watermark():
    page = _page((date(2024, 1, 5), "1.1", "1.2"))
    assert day_rows([page], CURRENCIES, date(2024, 1, 5), None) == ([], None)
    assert day_rows([], CURRENCIES, date(2024, 1, 5), None) == ([], None)


def test_a_gap_without_a_rate_to_carry_is_refused():
    page = _page((date(2024, 1, 8), "1.3", "1.4"))
    with pytest.raises(ValueError, match="no rate of USD to carry"):
        day_rows([page], CURRENCIES, date(2024, 1, 5), None)


def test_csv_writes_plain_notation_and_copys_booleans():
    rates = {date(2024, 1, 5): {"USD": Decimal("1E+2"), "EUR": Decimal("1.50")}}
    page = Page(date(2024, 1, 5), date(2024, 1, 5), rates)
    rows, _ = day_rows([page], CURRENCIES, None, None)
    assert csv_text(rows, ["rate_date", "currency_id", "units_per_gbp", "carried"]).decode().splitlines() == [
        "rate_date,currency_id,units_per_gbp,carried", "2024-01-05,1,1,f", "2024-01-05,2,100,f",
        "2024-01-05,3,1.50,f"]


def test_a_symbol_missing_from_a_day_is_no_bad_body():
    page = parse_page(body({"2024-01-05": {"USD": 1.2, "EUR": 1.1}, "2024-01-08": {"USD": 1.3}}),
                      ["USD", "EUR"], date(2024, 1, 5), date(2024, 1, 9))
    assert page.rates[date(2024, 1, 8)] == {"USD": Decimal("1.3")}


def test_a_currency_missing_from_a_day_stops_alone_and_the_others_go_on():
    """Issue 34 item 9, contract §9: EUR stops at the published day before the one that lacks it
    (carried days after it are not stored); USD and GBP go on to the newest day."""
    pages = [Page(date(2024, 1, 4), date(2024, 1, 10), {
        date(2024, 1, 4): {"USD": Decimal("1.0"), "EUR": Decimal("2.0")},
        date(2024, 1, 5): {"USD": Decimal("1.1"), "EUR": Decimal("2.1")},
        date(2024, 1, 8): {"USD": Decimal("1.2")},
        date(2024, 1, 9): {"USD": Decimal("1.3"), "EUR": Decimal("2.3")}})]
    made = currency_days(pages, CURRENCIES, date(2024, 1, 4), None)
    assert made.newest == {"USD": date(2024, 1, 9), "EUR": date(2024, 1, 5), "GBP": date(2024, 1, 9)}
    assert made.stopped == {"EUR": "EUR is missing from the FX API's rates of 2024-01-08"}
    by_currency = {c: [r.rate_date.day for r in made.rows if r.currency_id == i] for c, i in CURRENCIES.items()}
    assert by_currency == {"GBP": [5, 6, 7, 8, 9], "USD": [5, 6, 7, 8, 9], "EUR": [5]}
    # A currency with no rate on the day it must be carried from stops at once, alone.
    late = currency_days(pages, {"GBP": 1, "USD": 2, "CHF": 4}, date(2024, 1, 6), None)
    assert set(late.stopped) == {"CHF"} and late.newest["USD"] == date(2024, 1, 9)
    # Capped at `until` (a currency catching up never passes the others).
    assert currency_days(pages, {"EUR": 3}, date(2024, 1, 4), None, until=date(2024, 1, 5)).newest == \
        {"EUR": date(2024, 1, 5)}
