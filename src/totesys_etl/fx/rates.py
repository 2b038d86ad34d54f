"""The API's answers checked, and turned into day-by-day rows (contract §9), as pure functions.

A page is trusted only if it is exactly the contract's shape: a JSON object with `base` "GBP",
`start_date`/`end_date` dates, and `rates` mapping each date in the asked range to a rate for every
symbol asked, each a positive number. Anything else is a `BadBody` (the caller quarantines it).
Rates are read with `decimal.Decimal` (never a float) and written in plain notation, so the number
stored is the number the API published; a rate needing more than the lake's 10 decimal places or
20 integer digits (contract §3's `numeric` range) is bad, never rounded.

Rows (`day_rows`): from the first day to store up to the newest published day, every calendar
day: published days as published, other days the last published rate with `carried` true; GBP
itself 1 on every day, never carried. The run's newest published day is the next run's watermark,
and since stored rows always end on a published day, the next run can ask from that day again to
carry its rate over the following weekend.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

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
        try:
            document = json.loads(body, parse_float=Decimal, parse_int=Decimal)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"the body is not JSON: {e}") from None
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
            missing = [s for s in symbols if s not in by_symbol]
            if missing:
                raise ValueError(f"rates of {day} lack {', '.join(missing)}")
            days[day] = {s: _rate(by_symbol[s], f"rate of {s} on {day}") for s in symbols}
    except (UnicodeDecodeError, ValueError, InvalidOperation) as e:
        raise BadBody(str(e).splitlines()[0][:200] if str(e) else "the body is not JSON", body) from None
    return Page(start, end, dict(sorted(days.items())))


def published(pages: list[Page]) -> dict[date, dict[str, Decimal]]:
    """Every published day of the pages, in date order."""
    days: dict[date, dict[str, Decimal]] = {}
    for page in pages:
        days.update(page.rates)
    return dict(sorted(days.items()))


def day_rows(pages: list[Page], currencies: dict[str, int], after: date | None, earliest: date | None
             ) -> tuple[list[Row], date | None]:
    """(rows, newest published day) for the days after `after` (the previous run's newest stored
    day), or from the first published day on or after `earliest` on a first run.

    `currencies` maps code to currency_id (GBP included, if the source has it). A day before the
    first published one of this run is carried from the published day at or before `after`, which
    the caller asked for again; without it those days would leave a gap, so ValueError.
    """
    days = published(pages)
    basis = None
    if after is not None:
        older = [d for d in days if d <= after]
        basis = days[older[-1]] if older else None
        new = [d for d in days if d > after]
        first = after + timedelta(days=1)
    else:
        new = [d for d in days if earliest is None or d >= earliest]
        first = new[0] if new else None
    if not new:
        return [], None
    if first < new[0] and basis is None:
        raise ValueError(f"no rate to carry from for {first}..{new[0] - timedelta(days=1)}")
    rows = []
    day, last = first, basis
    while day <= new[-1]:
        rates, carried = (days[day], False) if day in days else (last, True)
        for code, currency_id in sorted(currencies.items(), key=lambda c: c[1]):
            if code == BASE:
                rows.append(Row(day, currency_id, Decimal(1), False))
            else:
                rows.append(Row(day, currency_id, rates[code], carried))
        last = rates
        day += timedelta(days=1)
    return rows, new[-1]


def csv_text(rows: list[Row], columns: list[str]) -> bytes:
    """The rows as the lake's CSV (contract §4, PostgreSQL COPY's dialect: `t`/`f`, a header), the rate
    in plain notation (`format(…, 'f')` keeps every digit the API sent, never an exponent)."""
    lines = [",".join(columns)]
    for r in rows:
        lines.append(f"{r.rate_date.isoformat()},{r.currency_id},{format(r.units_per_gbp, 'f')},"
                     f"{'t' if r.carried else 'f'}")
    return ("\n".join(lines) + "\n").encode()
