"""The API's answers checked, and turned into day-by-day rows (contract §9), as pure functions.

A page is trusted only if it is exactly the contract's shape: a JSON object with `base` "GBP",
`start_date`/`end_date` dates, and `rates` mapping each date in the asked range to rates of the
symbols asked, each a positive number. Anything else is a `BadBody` (the caller quarantines it). A
symbol missing from a day is not a bad body: the API does not serve that currency (any more), and
contract §9 stops that currency alone, at the published day before.
Rates are read with `decimal.Decimal` (never a float) and written in plain notation, so the number
stored is the number the API published; a rate needing more than the lake's 10 decimal places or
20 integer digits (contract §3's `numeric` range) is bad, never rounded.

Rows (`currency_days`, `day_rows`): from the first day to store up to the newest published day,
every calendar day: published days as published, other days the last published rate with `carried`
true; GBP itself 1 on every day, never carried. Each currency is its own unbroken run of days: it
stops at the first published day that lacks it (or when it has no rate to carry from), and the
others go on. The run's newest published day is the next run's watermark (a currency that stopped
earlier keeps its own), and since stored rows always end on a published day, the next run can ask
from that day again to carry its rate over the following weekend.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from totesys_etl.errors import parse_json

BASE = "GBP"
#: contract §3: `numeric` travels as decimal128(38, 10): at most 10 places and 20 integer digits.
MAX_PLACES, MAX_INTEGER_DIGITS = 10, 20
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadBody(ValueError):
    """An answer that is not the contract's shape or holds a rate that is not a positive number."""

    def __init__(self, reason: str, body: bytes):
        super().__init__(reason)
        self.body = body


@dataclass(frozen=True)
class Page:
    """One answer: the range it covers (`start`, `end`) and its rates by day and symbol."""

    start: date
    end: date
    rates: dict[date, dict[str, Decimal]]


@dataclass(frozen=True)
class Row:
    rate_date: date
    currency_id: int
    units_per_gbp: Decimal
    carried: bool


def _date(value, what: str) -> date:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a date")
    try:
        if not _ISO_DATE.fullmatch(value):
            raise ValueError()
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value[:40]!r} is not a YYYY-MM-DD date") from None


def _rate(value, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{what} is not a number")
    if value <= 0:
        raise ValueError(f"{what} is not positive")
    exponent = value.normalize().as_tuple().exponent
    if exponent < -MAX_PLACES or value.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValueError(f"{what} is beyond numeric(30, 10): absurd")
    return value


def parse_page(body: bytes, symbols: list[str], asked_start: date, asked_end: date) -> Page:
    """The page an answer to `asked_start..asked_end` holds; BadBody for anything else.

    Frankfurter answers a range starting on a holiday from the working day before it, so a
    rate dated before `asked_start` is allowed (never after `asked_end`).
    """
    try:
        document = parse_json(body, "the body", ValueError, parse_float=Decimal, parse_int=Decimal)
        if not isinstance(document, dict):
            raise ValueError("the body is not a JSON object")
        if document.get("base") != BASE:
            raise ValueError(f"base is {str(document.get('base'))[:20]!r}, not {BASE}")
        start, end = _date(document.get("start_date"), "start_date"), _date(document.get("end_date"), "end_date")
        rates = document.get("rates")
        if not isinstance(rates, dict):
            raise ValueError("rates is not an object")
        days: dict[date, dict[str, Decimal]] = {}
        for text, by_symbol in rates.items():
            day = _date(text, "a rates key")
            if day > asked_end or day > end:
                raise ValueError(f"rates hold {day}, after the range asked or answered")
            if not isinstance(by_symbol, dict):
                raise ValueError(f"rates of {day} are not an object")
            days[day] = {s: _rate(by_symbol[s], f"rate of {s} on {day}") for s in symbols if s in by_symbol}
    except (UnicodeDecodeError, ValueError, InvalidOperation) as e:
        raise BadBody(str(e).splitlines()[0][:200] if str(e) else "the body is not JSON", body) from None
    return Page(start, end, dict(sorted(days.items())))


def published(pages: list[Page]) -> dict[date, dict[str, Decimal]]:
    """Every published day of the pages, in date order."""
    days: dict[date, dict[str, Decimal]] = {}
    for page in pages:  # per symbol: a page asked with fewer symbols never hides an earlier page's rate
        for day, rates in page.rates.items():
            days.setdefault(day, {}).update(rates)
    return dict(sorted(days.items()))


@dataclass(frozen=True)
class Days:
    """What `currency_days` made: the rows, each currency's newest published day stored, and why each
    currency that stopped before the others stopped."""

    rows: list[Row]
    newest: dict[str, date]
    stopped: dict[str, str]


def currency_days(pages: list[Page], currencies: dict[str, int], after: date | None, earliest: date | None,
                  until: date | None = None) -> Days:
    """Rows for the days after `after` (the newest day stored for these currencies), or from the first
    published day on or after `earliest` on a first run, up to `until` if given; GBP, when among
    `currencies`, on every day up to the newest any other currency reached.

    Each other currency is an unbroken run of days of its own: it stops at the first published day
    that lacks it, or at once when the day at or before `after` that it must be carried from lacks
    it; the others go on (contract §9).
    """
    days = {d: r for d, r in published(pages).items() if until is None or d <= until}
    codes = sorted((c for c in currencies if c != BASE), key=lambda c: currencies[c])
    if after is not None:
        older = [d for d in days if d <= after]
        basis = days[older[-1]] if older else None
        new = [d for d in days if d > after]
        first = after + timedelta(days=1)
    else:
        basis = None
        new = [d for d in days if earliest is None or d >= earliest]
        first = new[0] if new else None
    rows: list[Row] = []
    newest: dict[str, date] = {}
    stopped: dict[str, str] = {}
    if not new:
        return Days(rows, newest, stopped)
    for code in codes:
        last = basis.get(code) if basis is not None else None
        if first < new[0] and last is None:
            stopped[code] = f"no rate of {code} to carry from for {first}..{new[0] - timedelta(days=1)}"
            continue
        reached = [d for d in new if code in days[d]]
        lacking = [d for d in new if code not in days[d]]
        end = new[-1] if not lacking else max([d for d in reached if d < lacking[0]], default=None)
        if lacking:
            stopped[code] = f"{code} is missing from the FX API's rates of {lacking[0]}"
        if end is None:
            continue
        day = first
        while day <= end:
            rate, carried = (days[day][code], False) if day in days else (last, True)
            rows.append(Row(day, currencies[code], rate, carried))
            last = rate
            day += timedelta(days=1)
        newest[code] = end
    if BASE in currencies and newest:
        day, end = first, max(newest.values())
        while day <= end:
            rows.append(Row(day, currencies[BASE], Decimal(1), False))
            day += timedelta(days=1)
        newest[BASE] = end
    rows.sort(key=lambda r: (r.rate_date, r.currency_id))
    return Days(rows, newest, stopped)


def day_rows(pages: list[Page], currencies: dict[str, int], after: date | None, earliest: date | None
             ) -> tuple[list[Row], date | None]:
    """(rows, newest published day) of `currency_days` for pages that hold every currency on every
    day; ValueError naming the first currency that stopped otherwise (reconcile's expectation must be
    the whole table: it never takes a shorter run for the truth)."""
    made = currency_days(pages, currencies, after, earliest)
    if made.stopped:
        raise ValueError("; ".join(made.stopped[c] for c in sorted(made.stopped)))
    return made.rows, max(made.newest.values(), default=None)


def csv_text(rows: list[Row], columns: list[str]) -> bytes:
    """The rows as the lake's CSV (contract §4, PostgreSQL COPY's dialect: `t`/`f`, a header), the rate
    in plain notation (`format(…, 'f')` keeps every digit the API sent, never an exponent)."""
    lines = [",".join(columns)]
    for r in rows:
        lines.append(f"{r.rate_date.isoformat()},{r.currency_id},{format(r.units_per_gbp, 'f')},"
                     f"{'t' if r.carried else 'f'}")
    return ("\n".join(lines) + "\n").encode()
