"""The SQL that folds one run's temp tables into state, dimensions, facts and dim_date.

Every statement is generated from the declarations (readme_files/design.md, "Loader"), and each
changes a star row only when its values change, so a replayed run or a run that repeats known
versions leaves every star row (and its xmin) as it was. Which version is newer is decided by the
run that read it (`etl_run_id`), never by its `last_updated` stamp (contract §3). A fact version
that a later run read again unchanged keeps its `etl_run_id`; the later run goes into the re-read
ledger instead (load/rereads.py), so that runs carrying x, y, x and loaded out of order still end
with x. State rows are not star rows: there the later run simply takes the row over (`merge_state`).
"""
from __future__ import annotations

import io
from datetime import date

import pyarrow.csv as pacsv
from pg8000.native import DatabaseError, identifier

from totesys_etl.adapters.postgres import Connection, copy_in, sqlstate
from totesys_etl.calendar import date_range, date_rows
from totesys_etl.load import rereads
from totesys_etl.load.files import temp_name
from totesys_etl.schema import DIM_DATE, Table, state_table
from totesys_etl.schema.derive import PRIMARY, derived_select
from totesys_etl.schema.ddl import column_list
from totesys_etl.schema.warehouse import RUN_ID, is_reference

#: contract §3: the calendar seeded on the first load, this many years either side of its UTC date.
SEED_YEARS = 3
_UNIQUE_VIOLATION = "23505"


def _q(name: str) -> str:
    return identifier(name)


def merge_state(conn: Connection, state: Table, run_id: str) -> int:
    """Upsert the run's rows of one source table into `etl_src_<t>`; rows inserted or whose values changed.

    contract §3: newer means committed later, not stamped later. A stored row is replaced by this
    run's version only when this run is later than the run that read the stored one (run ids
    sort in time order), never by comparing `last_updated`: a transaction that began first and
    committed last carries the older stamp. So a replay, or an older run loaded late, changes
    nothing. A later run that read the same values only takes the row's run id over (not counted):
    a run between the two, loaded late, must not win. Within one run, the newest stamp of an id wins.

    An UPDATE of the rows that exist, then an INSERT of those that do not, rather than `ON
    CONFLICT`: its speculative insertion doubles the cost of a big run (1.33M transactions: 4.0 s
    against 1.9 s), and the loader's advisory lock already makes it the only writer.
    """
    key, target, tmp, run = _q(state.key[0]), _q(state.name), _q(temp_name(state)), _q(RUN_ID.name)
    names = state.column_names
    values = [c for c in names if c not in state.key]
    newest = (f"(SELECT DISTINCT ON ({key}) {column_list(names)} FROM {tmp} "  # nosec B608
              f"ORDER BY {key}, {_q('last_updated')} DESC) AS n")
    sets = ", ".join(f"{_q(c)} = n.{_q(c)}" for c in values)
    old = ", ".join(f"{target}.{_q(c)}" for c in values)
    new = ", ".join(f"n.{_q(c)}" for c in values)
    conn.run(f"UPDATE {target} SET {sets}, {run} = :run_id FROM {newest} "  # nosec B608 - declared names
             f"WHERE {target}.{key} = n.{key} AND {target}.{run} < :run_id AND ({old}) IS DISTINCT FROM ({new})",
             run_id=run_id)
    replaced = conn.row_count
    conn.run(f"UPDATE {target} SET {run} = :run_id WHERE {key} IN (SELECT {key} FROM {tmp}) "  # nosec B608
             f"AND {run} < :run_id", run_id=run_id)
    conn.run(f"INSERT INTO {target} ({column_list([*names, RUN_ID.name])}) "  # nosec B608 - declared names
             f"SELECT {column_list(names)}, CAST(:run_id AS text) FROM {newest} "
             f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS s WHERE s.{key} = n.{key})", run_id=run_id)
    return replaced + conn.row_count


def _relation(source: str) -> str:
    """The relation a dimension's derivation reads: the loader's state, or a reference table."""
    return _q(source) if is_reference(source) else _q(state_table(source).name)


def empty_tables(conn: Connection, names: list[str]) -> set[str]:
    """Which of these (declared) tables hold no row, in one round trip."""
    if not names:
        return set()
    checks = ", ".join(f"NOT EXISTS (SELECT 1 FROM {_q(n)})" for n in names)  # nosec B608 - declared names
    return {n for n, empty in zip(names, conn.run(f"SELECT {checks}")[0]) if empty}


def affected_keys_condition(dimension: Table, run_sources: set[str], whole: set[str] = frozenset()
                            ) -> str | None:
    """Which dimension rows this run can change, as a condition on the primary row `p`.

    Its own source's ids in the run, plus primary rows whose join column points at a joined row
    in the run (an address change reaches every counterparty at that address). None: no row.
    `whole` names sources whose state this run created from empty (copied straight in, no temp
    table): every row of such a state is the run's, so every dimension row drawing on it may change.
    """
    if dimension.source in whole or any(j.table in whole for j in dimension.joins):
        return "TRUE"
    conditions = []
    if dimension.source in run_sources:
        key, tmp = _q(state_table(dimension.source).key[0]), _q(temp_name(state_table(dimension.source)))
        conditions.append(f"{PRIMARY}.{key} IN (SELECT {key} FROM {tmp})")  # nosec B608
    for join in dimension.joins:
        if not is_reference(join.table) and join.table in run_sources:
            tmp = _q(temp_name(state_table(join.table)))
            local, remote = _q(join.local), _q(join.remote)
            conditions.append(f"{PRIMARY}.{local} IN (SELECT {remote} FROM {tmp})")  # nosec B608
    return " OR ".join(f"({c})" for c in conditions) or None


def merge_dimension(conn: Connection, dimension: Table, run_sources: set[str], whole: set[str] = frozenset()) -> int:
    """Re-derive the affected rows from state and write those whose values differ.

    Derived from the *current* state, so the dimension equals what the final source state gives
    whatever order runs are loaded in (ADR 0002). Rows inserted or changed. UPDATE then INSERT,
    not `ON CONFLICT`, for the reason `merge_state` gives (1.33M transactions: 4.9 s against 3.1 s).
    """
    where = affected_keys_condition(dimension, run_sources, whole)
    if where is None:
        return 0
    key = _q(dimension.key[0])
    names = [c.name for c in dimension.data_columns]
    values = [n for n in names if n != dimension.key[0]]
    target = _q(dimension.name)
    derived = f"({derived_select(dimension, _relation, where)}) AS n"
    sets = ", ".join(f"{_q(c)} = n.{_q(c)}" for c in values)
    old = ", ".join(f"{target}.{_q(c)}" for c in values)
    new = ", ".join(f"n.{_q(c)}" for c in values)
    conn.run(f"UPDATE {target} SET {sets} FROM {derived} "  # nosec B608 - declared names
             f"WHERE {target}.{key} = n.{key} AND ({old}) IS DISTINCT FROM ({new})")
    changed = conn.row_count
    conn.run(f"INSERT INTO {target} ({column_list(names)}) SELECT {column_list(names)} FROM {derived} "  # nosec
             f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS d WHERE d.{key} = n.{key})")
    return changed + conn.row_count


def insert_fact_versions(conn: Connection, fact: Table, run_id: str) -> int:
    """Store this run's fact versions; rows inserted or updated.

    A version is (id, last_updated) (contract §3, "facts keep history"). One not stored yet is
    appended, in (id, last_updated) order, with this run's id. One already stored came from
    another commit with the same stamp, or is the same version read again: it is updated, values
    and `etl_run_id`, only when this run is later than the version's effective run (its own
    `etl_run_id`, or a later run that read it again unchanged: load/rereads.py) AND its values
    differ (the later commit wins) or another version of the id carries a later run than it (the
    id's current version, `newest_first`, must be the one the latest run read). So a replay, an
    older run loaded late, or a later run that read the same thing changes no row; the last is
    recorded in the re-read ledger instead, so that a run between the two, loaded after both,
    does not win either (R1, R2, R3 carrying x, y, x and loaded R1, R3, R2 end with x, as in
    order). A version this run writes may also move another version of the id to its ledger run
    (`promote_rereads`), so that the current version stays the one the latest run read.

    UPDATE first, so "another version carries a later run" looks only at earlier loads. `NOT
    EXISTS` before inserting, so a replay draws no serial values. A plain INSERT under a
    savepoint, since `ON CONFLICT`'s speculative insertion costs ~40 % more (1.14M payments: 5.5 s
    against 3.2 s); only a file that holds a version twice (a unique violation) takes the `ON
    CONFLICT DO NOTHING` path.
    """
    names = [c.name for c in fact.data_columns]
    values = [c for c in names if c not in fact.version_key]
    target, tmp, run = _q(fact.name), _q(temp_name(fact)), _q(RUN_ID.name)
    same = " AND ".join(f"f.{_q(c)} = t.{_q(c)}" for c in fact.version_key)
    id_ = _q(fact.version_key[0])
    sets = ", ".join(f"{_q(c)} = t.{_q(c)}" for c in values)
    old = ", ".join(f"f.{_q(c)}" for c in values)
    new = ", ".join(f"t.{_q(c)}" for c in values)
    conn.run(f"UPDATE {target} AS f SET {sets}, {run} = :run_id FROM {tmp} AS t "  # nosec B608 - declared names
             f"WHERE {same} AND f.{run} < :run_id AND {rereads.not_reread_since(conn, fact, 'f', run_id)} "
             f"AND (({old}) IS DISTINCT FROM ({new}) OR EXISTS "
             f"(SELECT 1 FROM {target} AS g WHERE g.{id_} = f.{id_} AND g.{run} > f.{run}))", run_id=run_id)
    updated = conn.row_count
    insert = (f"INSERT INTO {target} ({column_list([*names, RUN_ID.name])}) "  # nosec B608
              f"SELECT {', '.join(f't.{_q(c)}' for c in names)}, CAST(:run_id AS text) FROM {tmp} AS t "
              f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS f WHERE {same}) "
              f"ORDER BY {', '.join(f't.{_q(c)}' for c in fact.version_key)}")
    conn.run("SAVEPOINT etl_fact")
    try:
        conn.run(insert, run_id=run_id)
    except DatabaseError as e:
        if sqlstate(e) != _UNIQUE_VIOLATION:
            raise
        conn.run("ROLLBACK TO SAVEPOINT etl_fact")
        conn.run(f"{insert} ON CONFLICT ({column_list(fact.version_key)}) DO NOTHING", run_id=run_id)
    rows = conn.row_count
    conn.run("RELEASE SAVEPOINT etl_fact")
    rereads.record_rereads(conn, fact, run_id, updated + rows)
    promoted = rereads.promote_rereads(conn, fact, run_id)
    rereads.prune_rereads(conn, fact)
    return updated + rows + promoted


def insert_dates(conn: Connection) -> int:
    """Add the run's dim_date rows that are new; rows inserted."""
    names = DIM_DATE.column_names
    conn.run(f"INSERT INTO {_q(DIM_DATE.name)} ({column_list(names)}) "  # nosec B608
             f"SELECT {column_list(names)} FROM {_q(temp_name(DIM_DATE))} "
             f"ON CONFLICT ({column_list(DIM_DATE.key)}) DO NOTHING")
    return conn.row_count


def seed_calendar(conn: Connection, today: date) -> int:
    """On the first load (dim_date empty), the calendar ±SEED_YEARS around `today`; rows added.

    Afterwards dim_date grows only by the dates the runs' facts need (contract §3).
    """
    dim_date = _q(DIM_DATE.name)
    if conn.run(f"SELECT EXISTS (SELECT 1 FROM {dim_date})")[0][0]:  # nosec B608
        return 0
    rows = date_rows(date_range(_years_from(today, -SEED_YEARS), _years_from(today, SEED_YEARS)))
    buffer = io.BytesIO()
    pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False))
    return copy_in(conn, DIM_DATE.name, DIM_DATE.column_names, [buffer.getvalue()])


def _years_from(day: date, years: int) -> date:
    """The same day `years` away (29 February becomes the 28th in a common year)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)
