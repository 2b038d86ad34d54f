"""The two baselines the bench compares the pipeline with (contract §8).

The floor is measured with `psql`, PostgreSQL's own client: its `\\timing` of `COPY … TO STDOUT`
and `\\copy … FROM` is what the server and libpq cost, with no Python driver on top (pg8000 adds
about 70 % to a `COPY TO`), so the ratio is not flattered. The typical loader is awswrangler's
`to_sql` with upserts of 1,000 rows a statement.
"""
from __future__ import annotations

import os
import re
import subprocess  # nosec B404 - psql runs as a process of its own
import tempfile
import time
from pathlib import Path

from pg8000.native import identifier

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.bench.scratch import BenchFailed, Pipeline, Services, drop_database, fresh_database
from totesys_etl.local.services import servers
from totesys_etl.schema import API_FACTS, DIM_DATE, EVENT_FACTS, FACTS, SOURCE_TABLES, STATE_TABLES, Table
from totesys_etl.schema.ddl import create_table

TO_SQL_DB = "bench_to_sql"
FLOOR_SCHEMA = "bench_floor"
_PSQL_TIME = re.compile(r"^Time: ([0-9.]+) ms", re.MULTILINE)


# --- the floor: PostgreSQL's own COPY out and in ------------------------------------------------

def psql_path() -> Path:
    bindir = servers.postgres_bindir()
    if bindir is None or not (bindir / "psql").exists():
        raise BenchFailed("psql not found beside the PostgreSQL server binaries: the floor needs it")
    return bindir / "psql"


def floor(svc: Services, database: str, workdir: Path) -> dict[str, dict[str, float]]:
    """Seconds per source table of `COPY (SELECT * FROM t) TO STDOUT` plus `COPY … FROM STDIN` of
    the same bytes into an unindexed scratch table, all in one psql session (one connection):
    `{table: {"out": s, "in": s}}`.

    The scratch tables live in a schema of their own in the bench's source database (one
    connection cannot reach two databases) and are dropped afterwards; the pipeline reads only
    the eleven tables of `public`.
    """
    kwargs = parse_url(svc.admin_url(database))
    schema = identifier(FLOOR_SCHEMA)
    with tempfile.TemporaryDirectory(prefix="totesys-bench-floor-", dir=workdir) as folder:
        lines = ["\\set ON_ERROR_STOP 1", f"DROP SCHEMA IF EXISTS {schema} CASCADE;", f"CREATE SCHEMA {schema};"]
        lines += [f"CREATE TABLE {schema}.{identifier(t.name)} (LIKE public.{identifier(t.name)});"
                  for t in SOURCE_TABLES]
        lines.append("\\timing on")
        for table in SOURCE_TABLES:
            path = Path(folder) / f"{table.name}.copy"
            name = identifier(table.name)
            lines.append(f"COPY (SELECT * FROM public.{name}) TO STDOUT \\g '{path}'")  # nosec B608 - declared name
            lines.append(f"\\copy {FLOOR_SCHEMA}.{name} FROM '{path}'")
            lines.append(f"\\! rm -f '{path}'")
        lines += ["\\timing off", f"DROP SCHEMA {schema} CASCADE;"]
        script = Path(folder) / "floor.sql"
        script.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "PGPASSWORD": kwargs["password"] or "", "PGSSLMODE": "disable"}
        done = subprocess.run([str(psql_path()), "-X", "-q", "-h", kwargs["host"], "-p", str(kwargs["port"]),  # nosec
                               "-U", kwargs["user"], "-d", kwargs["database"], "-f", str(script)],
                              env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchFailed(f"the floor's psql session failed: {done.stderr.strip()[-300:]}")
    times = [float(ms) / 1000 for ms in _PSQL_TIME.findall(done.stdout)]
    if len(times) != 2 * len(SOURCE_TABLES):
        raise BenchFailed(f"psql reported {len(times)} timings, expected {2 * len(SOURCE_TABLES)}")
    return {t.name: {"out": round(times[2 * i], 4), "in": round(times[2 * i + 1], 4)}
            for i, t in enumerate(SOURCE_TABLES)}


# --- a typical loader: awswrangler's to_sql, upsert, 1,000 rows a statement ----------------------

def _conflict_columns(table: Table) -> list[str]:
    return list(table.version_key or table.key)


def to_sql_seconds(svc: Services, pipeline: Pipeline, run_id: str, workdir: Path) -> float:
    """Seconds for `wr.postgresql.to_sql(mode="upsert", chunksize=1000)` to load the run's Parquet.

    Same files as our loader read (the processed manifest's), same server, into a scratch
    database whose tables are the declared ones (keys included: an upsert needs them). Read as a
    user of the library would, with `wr.s3.read_parquet` (its nullable dtypes keep integer columns
    with NULLs integers); the clock covers what our loader's covers: reading the lake and the inserts.
    """
    import awswrangler as wr
    import pg8000

    from totesys_etl import manifest as manifests

    loadable = {t.name: t for t in (*STATE_TABLES, *FACTS, DIM_DATE, *API_FACTS, *EVENT_FACTS)}
    fresh_database(svc, TO_SQL_DB)
    conn = pg8000.connect(**parse_url(svc.admin_url(TO_SQL_DB)))
    try:
        cursor = conn.cursor()
        for table in loadable.values():
            cursor.execute(create_table(table))
        conn.commit()
        files = manifests.read(pipeline.buckets[1], run_id)["files"]
        start = time.perf_counter()
        for name, entry in sorted(files.items()):
            table = loadable[name]
            frame = wr.s3.read_parquet(f"s3://{pipeline.buckets[1]}/{entry['key']}")
            wr.postgresql.to_sql(frame, conn, table=table.name, schema="public", mode="upsert", chunksize=1000,
                                 use_column_names=True, upsert_conflict_columns=_conflict_columns(table))
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    drop_database(svc, TO_SQL_DB)
    return round(seconds, 4)
