"""The FX part of an ingest run (contract §9 "FX rates API"): rates since the last stored day, as the
run's `fx_rate` CSV, named in the run's manifest like any table.

Inside the run's snapshot (`read_inputs`): the currencies (code -> currency_id) and, on the first FX
run only, the earliest date any fact refers to, so the rows need no later join and a first backfill
starts where the facts do. After the snapshot's transaction has ended (no source snapshot is held
open during HTTP), `fetch`: asks the API for `previous..today` (the previous run's newest stored day,
a published day, is asked again to carry its rate over the days after it), keeps every page it got
before the first failure, and writes the unbroken run of days they give. The newest published day
becomes the manifest's `fx` watermark; when nothing new arrives, or FX fails, the previous watermark
is carried forward unchanged, so the next run resumes at the gap. A failure is one ERROR line
(`error_kind` fx_unavailable; a bad body is also copied to quarantine); it never fails the run.

A currency the API does not serve (HTTP 404 for it alone, or missing from an answer) stops alone
(contract §9): the others keep loading day by day. The manifest then carries, besides `fx`,
`fx_behind` (each such currency with the newest day stored for it, or null: it resumes at its own
gap, asked alone, and rejoins the others once it catches up) and `fx_unavailable` (the codes the
API did not serve in this run). The ERROR line names the codes, and so does the FX source's failure
record (`failures.record`), which `totesys-etl status` shows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from pg8000.native import identifier

from totesys_etl import failures, lake, quarantine
from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import Connection
from totesys_etl.config import Settings
from totesys_etl.errors import FxUnavailable, RunIdCollision, lake_errors
from totesys_etl.fx.client import Client, NotServed, api_url
from totesys_etl.fx.rates import BASE, BadBody, Days, Page, Row, csv_text, currency_days
from totesys_etl.logs import StageLog
from totesys_etl.schema import FACTS, FX_RATE, source_table

#: The manifest fields: the newest stored FX day (ISO date); the currencies behind it, each with its
#: own newest stored day (or null); the codes the API did not serve in the run.
FX_FIELD, BEHIND_FIELD, UNAVAILABLE_FIELD = "fx", "fx_behind", "fx_unavailable"
#: A date text as the facts' date columns should hold it (`YYYY-MM-DD`, ASCII digits).
_DAY_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class FxMark:
    """Where FX stands after a run: the newest day stored, and the currencies behind it."""

    newest: str | None = None
    behind: dict[str, str | None] = field(default_factory=dict)


def parse_behind(value) -> dict[str, str | None]:
    """A manifest's `fx_behind` (absent: {}); ValueError if it is not {code: "YYYY-MM-DD" or null}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{BEHIND_FIELD} is not an object")
    for code, day in value.items():
        if day is not None and not (isinstance(day, str) and date.fromisoformat(day).isoformat() == day):
            raise ValueError(f"{BEHIND_FIELD} of {str(code)[:10]!r} is not a YYYY-MM-DD date")
    return dict(value)


@dataclass(frozen=True)
class FxInputs:
    """What the FX part takes from the run's source snapshot."""

    currencies: dict[str, int]
    earliest: date | None


@dataclass(frozen=True)
class FxOutcome:
    """The FX part's share of the manifest: its file entry (or None), rows, the mark to carry, and the
    codes the API did not serve."""

    entry: dict | None
    rows: int
    mark: FxMark
    unavailable: tuple[str, ...] = ()

    def fields(self) -> dict:
        """The manifest's FX fields (none before the first FX day, nor for what is empty)."""
        fields: dict = {}
        if self.mark.newest is not None:
            fields[FX_FIELD] = self.mark.newest
        if self.mark.behind:
            fields[BEHIND_FIELD] = dict(sorted(self.mark.behind.items()))
        if self.unavailable:
            fields[UNAVAILABLE_FIELD] = list(self.unavailable)
        return fields


def enabled() -> bool:
    return api_url() is not None


def read_inputs(conn: Connection, previous: FxMark) -> FxInputs:
    """Currencies, and the earliest fact date when some currency has no FX day stored yet (inside the
    run's snapshot)."""
    currency = source_table("currency")
    rows = conn.run(f"SELECT {identifier('currency_code')}, {identifier('currency_id')} "  # nosec B608
                    f"FROM public.{identifier(currency.name)}")
    currencies = {code: currency_id for code, currency_id in rows}
    first_days_needed = previous.newest is None or None in previous.behind.values()
    return FxInputs(currencies, earliest_fact_date(conn) if first_days_needed else None)


def earliest_fact_date(conn: Connection) -> date | None:
    """The earliest date any fact refers to, read from the facts' source columns (their declaration
    says which: timestamps split into dates, and date texts). A date text that is not `YYYY-MM-DD`
    is left out here (the processor holds such a row back).

    One scan per fact's source table. A date text is first found by its shape (`LIKE`) and byte
    order: when the smallest text of that shape is all digits, it is the smallest `YYYY-MM-DD` too.
    Only a column where it is not runs the exact regular expression, which PostgreSQL evaluates at
    about 2.5 µs a row (0.7 s of a 100,000-order first load when it ran on every column).
    """
    found = []
    for fact in FACTS:
        columns = [column for column in fact.columns if column.type == "date"]
        if not columns:
            continue
        table = identifier(fact.source)
        smallest = []
        for column in columns:
            name = identifier(column.source_column)
            smallest.append(f"min({name} COLLATE \"C\") FILTER (WHERE {name} LIKE '____-__-__')"
                            if column.derive == "parse_date" else f"min({name})::date::text")
        row = conn.run(f"SELECT {', '.join(smallest)} FROM public.{table}")[0]  # nosec B608 - declared names
        for column, text in zip(columns, row):
            if text is not None and column.derive == "parse_date" and not _DAY_TEXT.fullmatch(text):
                name = identifier(column.source_column)
                text = conn.run(f"SELECT min({name} COLLATE \"C\") FROM public.{table} "  # nosec B608
                                f"WHERE {name} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$'")[0][0]
            found.append(text)
    days = []
    for text in filter(None, found):
        try:
            days.append(date.fromisoformat(text))
        except ValueError:  # 2023-02-30: not a date at all
            continue
    return min(days) if days else None


@dataclass
class _Group:
    """One request series: the currencies asked together from one day, what came back and what failed."""

    codes: list[str]
    pages: list[Page] = field(default_factory=list)
    not_served: list[str] = field(default_factory=list)
    failure: str | None = None
    bad: BadBody | None = None


def _fetch_group(client: Client, start: date, end: date, codes: list[str]) -> _Group:
    """Every page of `codes` from `start`; after a 404, the codes the API serves alone go on from
    there and the others are `not_served`. Stops at the first other failure (kept, not raised)."""
    group, asking, asked = _Group(list(codes)), list(codes), start
    while asking:
        try:
            for page in client.pages(asked, end, asking):
                group.pages.append(page)
            return group
        except NotServed as e:
            try:
                missing = [c for c in asking if not client.serves(e.asked, end, c)] if len(asking) > 1 else asking
            except FxUnavailable as probe:
                group.failure = str(probe)
                return group
            group.not_served += missing
            asking, asked = [c for c in asking if c not in missing], e.asked
        except FxUnavailable as e:
            group.failure = str(e)
            return group
        except BadBody as e:
            group.failure, group.bad = f"the FX API's answer is not the contract's shape: {e}", e
            return group
    return group


def fetch(settings: Settings, run_id: str, inputs: FxInputs, previous: FxMark, log: StageLog,
          today: date | None = None) -> FxOutcome:
    """Fetch, check and land this run's FX rows (see the module docstring); never raises for the API.

    The currencies up to date are asked together from the previous newest day; each currency behind
    is asked alone from its own newest day, up to the new newest day at most.
    """
    base_url = api_url()
    symbols = sorted(code for code in inputs.currencies if code != BASE)
    today = today or datetime.now(timezone.utc).date()
    after = date.fromisoformat(previous.newest) if previous.newest else None
    behind = {c: d for c, d in previous.behind.items() if c in symbols}
    if base_url is None or not symbols:
        return FxOutcome(None, 0, previous)
    client = Client(base_url)
    rows: list[Row] = []
    newest_of: dict[str, date | None] = {c: after for c in symbols if c not in behind}
    newest_of.update({c: date.fromisoformat(d) if d else None for c, d in behind.items()})
    groups: list[tuple[_Group, str]] = []
    stopped: dict[str, str] = {}

    main = [c for c in symbols if c not in behind]
    start = after or inputs.earliest
    new_newest = after
    if main and start is not None and start <= today and not (after and after >= today):
        group = _fetch_group(client, start, today, main)
        made = currency_days(group.pages, {c: inputs.currencies[c] for c in [*main, BASE] if c in inputs.currencies},
                             after, inputs.earliest)
        _take(made, rows, newest_of, stopped)
        groups.append((group, ""))
        new_newest = max([d for d in made.newest.values()] + ([after] if after else []), default=None)
    for code, day in sorted(behind.items()):
        code_after = date.fromisoformat(day) if day else None
        code_start = code_after or inputs.earliest
        if new_newest is None or code_start is None or code_start > today or (code_after and code_after >= new_newest):
            continue
        group = _fetch_group(client, code_start, today, [code])
        made = currency_days(group.pages, {code: inputs.currencies[code]}, code_after, inputs.earliest,
                             until=new_newest)
        _take(made, rows, newest_of, stopped)
        groups.append((group, f"{code}."))

    unavailable = sorted({c for g, _ in groups for c in g.not_served} |
                         {c for c, why in stopped.items() if "missing from" in why})
    _log_failures(settings, run_id, groups, stopped, unavailable, newest_of, log)
    mark = FxMark(new_newest.isoformat() if new_newest else None,
                  {c: (d.isoformat() if d else None) for c, d in newest_of.items()
                   if new_newest is not None and (d is None or d < new_newest)})
    if not rows:
        return FxOutcome(None, 0, mark, tuple(unavailable))
    key = lake.table_key(FX_RATE.name, run_id, "csv")
    body = csv_text(sorted(rows, key=lambda r: (r.rate_date, r.currency_id)), FX_RATE.column_names)
    with lake_errors(settings.ingest_bucket, key):
        if not s3.put_create_only(settings.ingest_bucket, key, body, "text/csv") and \
                not s3.holds(settings.ingest_bucket, key, body=body):
            raise RunIdCollision(f"another ingest already wrote objects of run {run_id}: stopped without a "
                                 "manifest, so the next run reads these changes")
    log.info("FX rates extracted", table=FX_RATE.name, rows=len(rows), newest_fx_date=mark.newest,
             behind=sorted(mark.behind) or None)
    return FxOutcome({"key": key, "rows": len(rows), "columns": FX_RATE.column_names}, len(rows), mark,
                     tuple(unavailable))


def _take(made: Days, rows: list[Row], newest_of: dict[str, date | None], stopped: dict[str, str]) -> None:
    rows += made.rows
    newest_of.update({c: d for c, d in made.newest.items() if c != BASE})
    stopped.update(made.stopped)


def _log_failures(settings: Settings, run_id: str, groups: list[tuple["_Group", str]], stopped: dict[str, str],
                  unavailable: list[str], newest_of: dict[str, date | None], log: StageLog) -> None:
    """One ERROR line for the codes the API did not serve, one for any other failure; a bad body is
    quarantined, which logs its own line. Each is also the FX source's failure record, for `status`
    (the run goes on, so no stage's record shows it)."""
    others = []
    for group, prefix in groups:
        if group.bad is not None:
            key = lake.table_key(FX_RATE.name, run_id, f"{prefix}page{len(group.pages) + 1}.json")
            with lake_errors(settings.processed_bucket, key):
                quarantine.quarantine_body(settings.processed_bucket, run_id, key, group.bad.body, group.failure,
                                           FxUnavailable.error_kind, log)
            failures.record("fx", FxUnavailable(group.failure))
        elif group.failure is not None:
            reached = [newest_of.get(c) for c in group.codes if newest_of.get(c)]
            others.append(f"{', '.join(group.codes)} stopped after {max(reached) if reached else 'nothing'}: "
                          f"{group.failure}")
    others += [why for code, why in sorted(stopped.items()) if code not in unavailable]
    if unavailable:
        where = "; ".join(f"{c} after {newest_of.get(c) or 'nothing stored'}" for c in unavailable)
        error = FxUnavailable(f"FX rates of {', '.join(unavailable)} stopped: the FX API does not serve "
                              f"{'it' if len(unavailable) == 1 else 'them'} ({where}); the other currencies go on")
        log.error(str(error), error_kind=FxUnavailable.error_kind, missing_currencies=unavailable)
        failures.record("fx", error)
    if others:
        error = FxUnavailable(f"FX rates stopped: {'; '.join(others)}")
        log.error(str(error), error_kind=FxUnavailable.error_kind)
        failures.record("fx", error)


def add_to_manifest(settings: Settings, manifest: dict, inputs: FxInputs | None, previous: FxMark,
                    log: StageLog) -> None:
    """The FX part of a run (either ingest mode), after the source is read: its file, rows and marks
    in the manifest. With FX off (`inputs` None), the marks an earlier run stored are carried forward."""
    outcome = FxOutcome(None, 0, previous)
    if inputs is not None:
        outcome = fetch(settings, manifest["run_id"], inputs, previous, log)
        manifest["rows"][FX_RATE.name] = outcome.rows
    if outcome.entry:
        manifest["files"][FX_RATE.name] = outcome.entry
    manifest.update(outcome.fields())
