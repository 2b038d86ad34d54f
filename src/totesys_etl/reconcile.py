"""`totesys-etl reconcile`: the warehouse against the source, table by table (contract §6).

Expected rows come from the source through the same declaration the loader uses
(`schema.derive`), and both sides are reduced to (key, md5 of the canonical row) in SQL, so a
million rows cost two narrow result sets, not two copies of the data.

A fact keeps every version; the one compared with the source is the id's current version, the
one the latest run read (`etl_run_id`, then `last_updated`: contract §3, newer means committed later).
Fact history is checked too: no version stored twice, the source's current version of every row
stored at all (a lost version is told apart from an older version wrongly taken as current), and
every version a run shipped (the ingested CSVs, less what the processor held back) stored exactly
once, with none that no run shipped, and no version of any source table shipped by more than one
run (`history`), but for a frozen row re-read after a wraparound, which the source proves and the
report names on a line of its own (the bound in ADR 0001: `wraparound.explain_wraparound`).

A source row whose derivation PostgreSQL refuses (`'TBC'` in a varchar date column) is one the
processor holds back: reconcile names it with PostgreSQL's reason (`held_back`), compares the
table's other rows, and fails on the whole table never (`_expected_digests`). A source table that
lacks a declared column (dropped or renamed: contract §2 "Schema changes") stops only the tables
drawn from it, as it stops only their ingest: they are named, not compared (`stopped`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pg8000.native import identifier

from totesys_etl import landed
from totesys_etl.adapters.postgres import Connection, DatabaseError, connect, sqlstate, table_columns
from totesys_etl.config import Settings
from totesys_etl.errors import EtlError, lake_errors
from totesys_etl.fx.client import Client, api_url
from totesys_etl.fx.rates import day_rows
from totesys_etl.history import History, Reship, check_history, shipped_versions
from totesys_etl.wraparound import explain_wraparound
from totesys_etl.schema import (DIMENSIONS, FACT_EXCHANGE_RATE, FACTS, SOURCE_TABLES, STATE_TABLES, fact_references,
                                source_table, state_table)
from totesys_etl.schema.cdc import ETL_DELETED_ROW, deleted_after
from totesys_etl.schema.derive import PRIMARY, derived_select, expression
from totesys_etl.schema.model import Table
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.warehouse import RUN_ID, is_reference, newest_first, reference_rows, warehouse_table


_VARCHAR_N = re.compile(r"varchar\(\d+\)")
#: SQLSTATE class 22, data exception: PostgreSQL refuses a value (what the processor would hold back).
_DATA_EXCEPTION = "22"


@dataclass
class TableCheck:
    table: str
    source_rows: int = 0
    warehouse_rows: int = 0
    missing: list = field(default_factory=list)      # keys in the source, not in the warehouse
    extra: list = field(default_factory=list)        # keys in the warehouse, not in the source
    different: list = field(default_factory=list)    # keys whose (current) row differs
    missing_versions: list = field(default_factory=list)  # fact ids whose source version is not stored at all
    duplicate_versions: int = 0
    unresolved: dict = field(default_factory=dict)   # column -> fact rows whose key does not resolve
    held_back: dict = field(default_factory=dict)    # key -> why its source row cannot be derived
    history: History | None = None                   # facts: versions shipped by runs against stored
    notes: list = field(default_factory=list)        # what is worth saying but is not a difference
    stopped: str | None = None                       # why it was not compared (a source column is gone)

    @property
    def ok(self) -> bool:
        return not (self.stopped or self.missing or self.extra or self.different or self.duplicate_versions
                    or self.held_back or any(self.unresolved.values())
                    or (self.history is not None and not self.history.ok))


def _history_cell(history: History | None) -> str:
    if history is None:
        return "-"
    return f"{history.shipped:,} ok" if history.ok else \
        f"{len(history.lost)} lost, {len(history.twice)} twice, {len(history.unshipped)} unshipped, " \
        f"{len(history.reshipped)} reshipped"


def _reship_line(table: str, reshipped: list[Reship]) -> str:
    shown = "; ".join(f"{i} @ {stamp.isoformat(sep=' ')} by {', '.join(runs)}" for (i, stamp), runs in reshipped[:3])
    return f"{table}: {len(reshipped)} versions shipped by more than one run (the same row), e.g. {shown}"


def _wrapped_line(table: str, wrapped: list[Reship]) -> str:
    (i, stamp), runs = wrapped[0]
    return (f"{table}: re-read after a wraparound: {len(wrapped):,} rows, the bound in ADR 0001 (frozen rows read "
            f"again when their raw xmin came round; stored once), e.g. {i} @ {stamp.isoformat(sep=' ')} by "
            f"{', '.join(runs)}")


@dataclass
class Report:
    checks: list[TableCheck]
    #: Source tables without a fact of their own -> versions the lake shipped in more than one run.
    reshipped: dict[str, list[Reship]] = field(default_factory=dict)
    #: Source table -> (versions read again by runs that read everything on purpose, those runs): a note.
    reread: dict[str, tuple[int, set[str]]] = field(default_factory=dict)
    #: Source table -> versions re-read after a wraparound (ADR 0001's bound), with their runs: a note.
    wrapped: dict[str, list[Reship]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and not any(self.reshipped.values())

    def table(self) -> str:
        header = ("table", "source", "warehouse", "missing", "extra", "different", "dup versions",
                  "unresolved", "history", "status")
        rows = [header] + [(c.table, f"{c.source_rows:,}", f"{c.warehouse_rows:,}", str(len(c.missing)),
                            str(len(c.extra)), str(len(c.different)), str(c.duplicate_versions),
                            str(sum(c.unresolved.values())), _history_cell(c.history),
                            "ok" if c.ok else "STOPPED" if c.stopped else "DIFFERENT") for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for c in self.checks:
            if c.stopped:
                lines.append(f"{c.table}: not compared: {c.stopped}")
            for label, keys in (("missing from the warehouse", c.missing), ("not in the source", c.extra),
                                ("different", c.different),
                                ("without the source's current version stored", c.missing_versions)):
                if keys:
                    lines.append(f"{c.table}: {len(keys)} {label}, e.g. {sorted(keys)[:5]}")
            if c.held_back:
                shown = "; ".join(f"{k} ({c.held_back[k]})" for k in sorted(c.held_back)[:3])
                lines.append(f"{c.table}: {len(c.held_back)} source rows that cannot be loaded as they are "
                             f"(held back until the source is fixed; see `totesys-etl quarantine`), e.g. {shown}")
            lines += [f"{c.table}: {note}" for note in c.notes]
            for column, n in c.unresolved.items():
                if n:
                    lines.append(f"{c.table}.{column}: {n} rows do not resolve")
            if c.history is not None:
                for label, versions in (("versions a run shipped, not stored", c.history.lost),
                                        ("versions stored twice", c.history.twice),
                                        ("versions stored that no run shipped", c.history.unshipped)):
                    if versions:
                        shown = [f"{i} @ {stamp.isoformat(sep=' ')}" for i, stamp in versions[:3]]
                        lines.append(f"{c.table}: {len(versions)} {label}, e.g. {shown}")
                if c.history.reshipped:
                    lines.append(_reship_line(c.table, c.history.reshipped))
        lines += [_reship_line(table, found) for table, found in sorted(self.reshipped.items()) if found]
        lines += [f"{table}: {n:,} versions read again by a run that read every row on purpose "
                  f"({', '.join(sorted(runs))}: a restore, a failover, a lost slot or a mode switch; its warning "
                  "says which), stored once" for table, (n, runs) in sorted(self.reread.items()) if n]
        lines += [_wrapped_line(table, found) for table, found in sorted(self.wrapped.items()) if found]
        lines.append("reconcile: " + ("warehouse equals source" if self.ok else "DIFFERENCES FOUND"))
        return "\n".join(lines)


def _canonical(table: Table, alias: str = "r") -> str:
    """md5 of a row as text: numerics without trailing zeros, NULL distinct from ''."""
    parts = []
    for c in table.data_columns:
        ref = f"{alias}.{identifier(c.name)}"
        if c.type.startswith("numeric"):
            ref = f"trim_scale({ref})"
        parts.append(f"quote_nullable(({ref})::text)")
    return f"md5(concat_ws('|', {', '.join(parts)}))"


def _source_relation(name: str) -> str:
    """A source table read as declared, or a reference table's own rows (bound as `:<column>` arrays).

    Each declared column is cast to its declared type, as the processor reads the CSV against the
    declaration whatever the source's types are now: a column whose type changed but whose values
    fit (contract §2 "Schema changes": money now varchar, a timestamptz, a bigint) compares as
    before, and a value that no longer fits is refused by PostgreSQL and held back. A `varchar(n)`
    is cast to `varchar`, never cut to its length.
    """
    if is_reference(name):
        columns = warehouse_table(name).column_names
        arrays = ", ".join(f"CAST(:{c} AS text[])" for c in columns)
        return f"(SELECT * FROM unnest({arrays}) AS n({column_list(columns)}))"  # nosec B608 - declared names
    typed = ", ".join(f"CAST(s.{identifier(c.name)} AS {_VARCHAR_N.sub('varchar', c.type)}) AS {identifier(c.name)}"
                      for c in source_table(name).columns)
    return f"(SELECT {typed} FROM public.{identifier(name)} AS s)"  # nosec B608 - declared names and types


def _digests(conn: Connection, sql: str, **params) -> dict:
    return {row[0]: row[1] for row in conn.run(sql, **params)}


def _gone_columns(source: Connection) -> dict[str, list[str]]:
    """Source table -> its declared columns the source no longer has (none: absent)."""
    present = table_columns(source, [t.name for t in SOURCE_TABLES])
    gone = {t.name: [c for c in t.column_names if c not in present.get(t.name, set())] for t in SOURCE_TABLES}
    return {name: columns for name, columns in gone.items() if columns}


def _stopped(table: Table, gone: dict[str, list[str]]) -> str | None:
    """Why `table` cannot be compared now: a source table it draws on lacks a declared column."""
    drawn_on = [table.source, *(j.table for j in table.joins if not is_reference(j.table))]
    reasons = [f"source table {name} lacks {', '.join(gone[name])}" for name in dict.fromkeys(drawn_on) if name in gone]
    if not reasons:
        return None
    return "; ".join(reasons) + " (its ingest is stopped too: source_schema_changed; it catches up once they are back)"


def check_table(table: Table, source: Connection, warehouse: Connection,
                gone: dict[str, list[str]] | None = None) -> TableCheck:
    stopped = _stopped(table, gone or {})
    if stopped:
        return TableCheck(table.name, warehouse_rows=warehouse.run(
            f"SELECT count(*) FROM {identifier(table.name)}")[0][0], stopped=stopped)  # nosec B608 - declared
    key = identifier(table.version_key[0] if table.kind == "fact" else table.key[0])
    name, digest = identifier(table.name), _canonical(table)
    params = {}
    for join in table.joins:
        if is_reference(join.table):
            params.update(reference_rows(warehouse_table(join.table)))
    expected, held_back = _expected_digests(source, table, params)
    if table.kind == "fact":
        order = ", ".join(f"r.{identifier(c)} DESC" for c in newest_first(table))
        run = identifier(RUN_ID.name)
        actual_sql = (f"SELECT DISTINCT ON (r.{key}) r.{key}, {digest}, r.{run} FROM {name} r "  # nosec B608
                      f"ORDER BY r.{key}, {order}")
    else:
        actual_sql = f"SELECT r.{key}, {digest}, {_version_run(table)} FROM {name} r"  # nosec B608
    if table.source in _SOURCES and _records_deletes(warehouse):
        # contract §10: an id deleted in the source since its newest version is left out
        deleted = deleted_after(table.source, "c.k", "c.v")
        actual_sql = f"SELECT c.k, c.d FROM ({actual_sql}) AS c (k, d, v) WHERE NOT {deleted}"  # nosec B608
    actual = _digests(warehouse, actual_sql)
    check = TableCheck(table.name, len(expected),
                       warehouse.run(f"SELECT count(*) FROM {identifier(table.name)}")[0][0])  # nosec B608
    check.source_rows += len(held_back)
    check.held_back = held_back
    check.missing = [k for k in expected if k not in actual]
    check.extra = [k for k in actual if k not in expected and k not in held_back]
    check.different = [k for k, digest in expected.items() if k in actual and actual[k] != digest]
    if table.kind == "fact":
        check.missing_versions = _versions_not_stored(warehouse, table, check.different, expected)
        versions = ", ".join(identifier(c) for c in table.version_key)
        check.duplicate_versions = warehouse.run(
            f"SELECT count(*) - count(DISTINCT ({versions})) FROM {identifier(table.name)}")[0][0]  # nosec B608
        for column, target in fact_references(table).items():
            dim, dim_key = target.split(".")
            check.unresolved[column] = warehouse.run(
                f"SELECT count(*) FROM {name} f WHERE f.{identifier(column)} IS NOT NULL "  # nosec B608
                f"AND NOT EXISTS (SELECT 1 FROM {identifier(dim)} d "
                f"WHERE d.{identifier(dim_key)} = f.{identifier(column)})")[0][0]
    return check


def _version_run(dimension: Table) -> str:
    """SQL for the run that read a dimension row's source version (its state row's `etl_run_id`)."""
    if dimension.source not in {t.source for t in STATE_TABLES}:
        return "NULL"
    state = state_table(dimension.source)
    source_key = dimension.column(dimension.key[0]).source_column or dimension.key[0]
    return (f"(SELECT s.{identifier(RUN_ID.name)} FROM {identifier(state.name)} s "  # nosec B608 - declared names
            f"WHERE s.{identifier(source_key)} = r.{identifier(dimension.key[0])})")


_SOURCES = frozenset(t.name for t in SOURCE_TABLES)


def _records_deletes(warehouse: Connection) -> bool:
    return warehouse.run("SELECT to_regclass(:t) IS NOT NULL", t=ETL_DELETED_ROW.name)[0][0]


def _expected_digests(source: Connection, table: Table, params: dict) -> tuple[dict, dict]:
    """Key -> digest of the row the source gives, and key -> why a source row cannot be derived.

    The whole table is one query. Only if PostgreSQL refuses a value in it (a data exception, such
    as `'TBC'::date`) are key ranges halved down to the rows that fail alone: a few queries per bad
    row, each under a savepoint, since the source is read in one transaction (one snapshot).
    """
    key = table.version_key[0] if table.kind == "fact" else table.key[0]
    source_key = f"{PRIMARY}.{identifier(table.column(key).source_column or key)}"

    def digests(where: str = "") -> dict | None:
        rows = derived_select(table, _source_relation, where)
        sql = f"SELECT r.{identifier(key)}, {_canonical(table)} FROM ({rows}) AS r"  # nosec B608 - declared names
        return _unless_refused(source, lambda: _digests(source, sql, **params))[0]

    expected = digests()
    if expected is not None:
        return expected, {}
    expected, held_back = {}, {}
    low, high = source.run(f"SELECT min({source_key}), max({source_key}) "  # nosec B608 - declared names
                           f"FROM {_source_relation(table.source)} AS {PRIMARY}")[0]
    ranges = [(low, high)]
    while ranges:
        low, high = ranges.pop()
        found = digests(f"{source_key} BETWEEN {int(low)} AND {int(high)}")
        if found is not None:
            expected.update(found)
        elif low == high:
            held_back[low] = _refusal(source, table, source_key, low)
        else:
            middle = (low + high) // 2
            ranges += [(middle + 1, high), (low, middle)]
    return expected, held_back


def _unless_refused(source: Connection, query: Callable[[], Any]) -> tuple[Any, str | None]:
    """(`query()`'s result, None), or (None, PostgreSQL's message) if it refused a value in it; under
    a savepoint, so the transaction (the snapshot every table is read in) goes on either way."""
    source.run("SAVEPOINT etl_reconcile")
    try:
        result = query()
    except DatabaseError as e:
        if not sqlstate(e).startswith(_DATA_EXCEPTION):
            raise
        source.run("ROLLBACK TO SAVEPOINT etl_reconcile")
        return None, e.args[0].get("M", "refused")
    source.run("RELEASE SAVEPOINT etl_reconcile")
    return result, None


def _refusal(source: Connection, table: Table, source_key: str, key: int) -> str:
    """Which column of one source row PostgreSQL refuses to read as declared or derive, in its words."""
    for column in (c for c in table.data_columns if c.source_table is None):
        sql = (f"SELECT {expression(column)} FROM {_source_relation(table.source)} AS {PRIMARY} "  # nosec B608
               f"WHERE {source_key} = {int(key)}")
        _, refused = _unless_refused(source, lambda: source.run(sql))
        if refused is not None:
            return f"{column.source_column or column.name}: {refused}"
    return "refused by PostgreSQL"


def _versions_not_stored(warehouse: Connection, fact: Table, different: list, expected: dict) -> list:
    """Of the fact ids whose current version differs, those with no row equal to the source's row.

    Only the differing ids are read again, so a clean warehouse pays nothing for this.
    """
    if not different:
        return []
    key = identifier(fact.version_key[0])
    stored = warehouse.run(f"SELECT r.{key}, {_canonical(fact)} FROM {identifier(fact.name)} r "  # nosec B608
                           f"WHERE r.{key} = ANY(CAST(:ids AS int[]))", ids=sorted(different))
    held = {(k, digest) for k, digest in stored}
    return [k for k in different if (k, expected[k]) not in held]


def check_exchange_rates(base_url: str, source: Connection, warehouse: Connection) -> TableCheck:
    """`fact_exchange_rate` against what the FX API serves now for the stored range (contract §9).

    The expected rows are made by the ingest's own rules (`fx.rates.day_rows`) from the API's
    answers for the first to the newest stored day and the source's currencies; rows compare by
    number (trailing zeros do not matter). FxUnavailable if the API cannot be read.
    """
    table = FACT_EXCHANGE_RATE
    name = identifier(table.name)
    check = TableCheck(table.name)
    if warehouse.run("SELECT to_regclass(:t)", t=table.name)[0][0] is None:
        return check
    first, last = warehouse.run(f"SELECT min(rate_date), max(rate_date) FROM {name}")[0]  # nosec B608
    actual = {(r[0], r[1]): (r[2], r[3]) for r in warehouse.run(
        f"SELECT rate_date, currency_id, units_per_gbp, carried FROM {name}")}  # nosec B608
    expected = {}
    if first is not None:
        currencies = {code: currency_id for code, currency_id in source.run(
            f"SELECT currency_code, currency_id FROM public.{identifier('currency')}")}  # nosec B608
        symbols = sorted(c for c in currencies if c != "GBP")
        pages = list(Client(base_url).pages(first, last, symbols)) if symbols else []
        rows, _ = day_rows(pages, currencies, None, first)
        expected = {(r.rate_date, r.currency_id): (r.units_per_gbp, r.carried) for r in rows if r.rate_date <= last}
    check.source_rows, check.warehouse_rows = len(expected), len(actual)
    check.missing = [k for k in expected if k not in actual]
    check.extra = [k for k in actual if k not in expected]
    check.different = [k for k in expected if k in actual and actual[k] != expected[k]]
    for column, target in fact_references(table).items():
        dim, dim_key = target.split(".")
        check.unresolved[column] = warehouse.run(
            f"SELECT count(*) FROM {name} f WHERE NOT EXISTS (SELECT 1 FROM {identifier(dim)} d "  # nosec B608
            f"WHERE d.{identifier(dim_key)} = f.{identifier(column)})")[0][0]
    return check


def reconcile(settings: Settings | None = None, history: bool = True) -> Report:
    """Compare every dimension and fact with the source; the report says where they differ.

    `history=False` leaves out the check against the ingested runs: for a warehouse loaded from a
    processed lake alone (the loader's own tests), where no run's CSVs exist to compare with.
    """
    settings = settings or Settings.from_env()
    source, warehouse = connect(settings.source), connect(settings.warehouse)
    try:
        source.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        gone = _gone_columns(source)
        checks = [check_table(t, source, warehouse, gone) for t in (*DIMENSIONS, *FACTS)]
        if api_url() is not None:
            checks.append(check_exchange_rates(api_url(), source, warehouse))
        source.run("COMMIT")
        histories, reshipped, reread, wrapped = {}, {}, {}, {}
        if history:
            with lake_errors(settings.ingest_bucket):
                # Every source table: a version shipped twice is a fault whichever table it is in.
                shipped = shipped_versions(settings.ingest_bucket, settings.processed_bucket,
                                           {t.name for t in SOURCE_TABLES})
                explain_wraparound(source, settings.ingest_bucket, shipped, unreadable=set(gone))
                histories = {h.fact: h for h in check_history(warehouse, settings.ingest_bucket,
                                                              settings.processed_bucket, shipped=shipped)}
            with_fact = {f.source for f in FACTS}
            reshipped = {t: s.reshipped for t, s in shipped.items() if t not in with_fact and s.reshipped}
            reread = {t: (s.reread, s.reread_by) for t, s in shipped.items() if s.reread}
            wrapped = {t: s.wrapped for t, s in shipped.items() if s.wrapped}
        for check in checks:
            check.history = histories.get(check.table)
        if history and settings.landing_bucket:  # contract §9: fact_delivery against what landed
            checks.append(landed.check(warehouse, settings, TableCheck))
        return Report(checks, reshipped, reread, wrapped)
    except DatabaseError as e:
        detail = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
        if sqlstate(e) == "42P01":  # undefined_table
            raise EtlError(f"nothing to compare: {detail.get('M')} (has a tick loaded anything yet?)") from None
        raise EtlError(f"reconcile failed: {detail.get('M', type(e).__name__)}") from None
    finally:
        source.close()
        warehouse.close()
