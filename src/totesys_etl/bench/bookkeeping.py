"""`python -m totesys_etl.bench.bookkeeping`: the ingest's bookkeeping bound (contract §2 "Bounded
bookkeeping", issue 34), measured on a cluster and an S3 API of its own (made in a temporary folder,
removed afterwards; nothing of `.local/` or the shell's settings is touched).

Two loads that made a run's bookkeeping grow without bound before issue 34:

- `held`: a transaction holds an id while `HELD_COMMITS` other transactions commit, every other one
  inserting a source row (a department), so the ids with versions are as fragmented as they get;
- `subtransactions`: one open transaction with `SUBTRANSACTIONS` savepoints, each with its own id;
- `interleaved` (issue 34, the case ADR 0001 once left unbounded): one open transaction opens a
  savepoint and writes a source row (a department), then another session commits a source row,
  `INTERLEAVED` times over (10,000 and 100,000), so the ids counted as in progress alternate one
  for one with ids that ended; then the transaction commits and every row must arrive once.

For each, two ingest runs (the one after the load and a quiet one), with the manifest's size in
bytes (deterministic: the test `test/ingest/years/test_bookkeeping.py` asserts it) and the run's
bookkeeping seconds: everything but reading and writing rows, i.e. the run's seconds minus its
tables' COPY seconds (machine-dependent: reported here, never asserted in a unit test). Each run
also reports the CPU seconds this process and the source's server spent on it (from /proc): on a
loaded machine the wall seconds read high, those do not.
The bound: under 64 KB and under 1 s. readme_files/benchmarks.md has the figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import boto3

from totesys_etl import lake
from totesys_etl.config import Settings
from totesys_etl.local.services import admin, servers
from totesys_etl import logs
from totesys_etl.logs import StageLog

HELD_COMMITS = 100_000
SUBTRANSACTIONS = 200_000
INTERLEAVED = (10_000, 100_000)
MANIFEST_LIMIT = 64 * 1024
SECONDS_LIMIT = 1.0


def commit_interleaved(admin_url_conn, count: int) -> None:
    """`count` committed transactions, every other one inserting a source row (a department; the
    others write a table of another application), on a connection of the source's admin role."""
    admin_url_conn.run("CREATE TABLE IF NOT EXISTS bench_other_app (n bigint)")
    admin_url_conn.run(
        f"DO $$ BEGIN FOR i IN 1..{int(count)} LOOP"  # nosec B608 - constant text around an int
        " IF i % 2 = 0 THEN INSERT INTO department (department_id, department_name, created_at, last_updated)"
        "  VALUES (1000000 + i, 'bench ' || i, LOCALTIMESTAMP, LOCALTIMESTAMP);"
        " ELSE INSERT INTO bench_other_app VALUES (i); END IF; COMMIT; END LOOP; END $$")


def open_subtransactions(held_conn, count: int) -> None:
    """Begin a transaction on `held_conn` and leave it open with `count` subtransactions, each with an id."""
    held_conn.run("CREATE TABLE IF NOT EXISTS bench_other_app (n bigint)")
    held_conn.run("BEGIN")
    held_conn.run(f"DO $$ BEGIN FOR i IN 1..{int(count)} LOOP BEGIN INSERT INTO bench_other_app VALUES (i);"  # nosec
                  " EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$")


def interleave_savepoints(held_conn, other_conn, count: int, first_id: int) -> None:
    """On `held_conn`, inside its open transaction, `count` savepoints each inserting a department
    (ids `first_id`, `first_id + 2`, ...) under an id of its own; after each, `other_conn` commits a
    department (`first_id + 1`, ...) under another id: the in-progress ids interleave one for one
    with ended ones. Two round trips per savepoint and commit (a DO block cannot commit between
    another session's savepoints), each one simple query of integers formatted into constant text."""
    insert = ("INSERT INTO department (department_id, department_name, created_at, last_updated)"
              " VALUES ({n}, 'interleaved {n}', LOCALTIMESTAMP, LOCALTIMESTAMP)")
    for i in range(int(count)):
        n = int(first_id) + 2 * i
        # its id stays the transaction's, in progress, after the release
        held_conn.run(f"SAVEPOINT interleaved; {insert.format(n=n)}; RELEASE SAVEPOINT interleaved")  # nosec B608
        other_conn.run(insert.format(n=n + 1))  # nosec B608 - an int in constant text


class _Tables(logging.Handler):
    """Collects the seconds of the run's `table extracted` lines."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def emit(self, record):
        fields = getattr(record, "fields", {})
        if record.getMessage() == "table extracted":
            self.seconds += fields.get("seconds", 0.0)


def measured_run(settings: Settings, cluster: servers.Postgres | None = None) -> dict:
    """One ingest run: its manifest's bytes, its seconds and its bookkeeping seconds, and the CPU
    seconds this process and the source's server (`cluster`, when given) spent on the whole run:
    on a loaded machine the wall seconds read high, the CPU seconds do not."""
    from totesys_etl.ingest.run import ingest

    tables = _Tables()
    logger = logging.getLogger("totesys_etl")
    logger.addHandler(tables)
    server_before, cpu_before = _server_cpu_seconds(cluster), time.process_time()
    try:
        result = ingest(settings, StageLog("ingest"))
    finally:
        logger.removeHandler(tables)
    cpu, server_after = time.process_time() - cpu_before, _server_cpu_seconds(cluster)
    body = boto3.client("s3").get_object(Bucket=settings.ingest_bucket, Key=lake.manifest_key(result.run_id))["Body"]
    size = len(body.read())
    return {"run_id": result.run_id, "manifest_bytes": size, "seconds": round(result.seconds, 3),
            "bookkeeping_s": round(max(0.0, result.seconds - tables.seconds), 3), "rows": sum(result.rows.values()),
            "process_cpu_s": round(cpu, 3),
            "server_cpu_s": round(server_after - server_before, 3) if server_before is not None else None}


def _server_cpu_seconds(cluster: servers.Postgres | None) -> float | None:
    """CPU seconds of the cluster's postmaster and its processes, ended ones included (the postmaster
    reaps them); None without /proc (not Linux) or a cluster."""
    try:
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0]) if cluster else None
    except (OSError, ValueError, IndexError):
        return None
    if postmaster is None or not os.path.isdir("/proc"):
        return None
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, ...
        if int(pid) == postmaster:
            ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m totesys_etl.bench.bookkeeping", description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=HELD_COMMITS)
    parser.add_argument("--subtransactions", type=int, default=SUBTRANSACTIONS)
    parser.add_argument("--interleaved", type=int, nargs="*", default=list(INTERLEAVED),
                        help="savepoints interleaved one for one with other sessions' commits (default: "
                        f"{' and '.join(map(str, INTERLEAVED))})")
    parser.add_argument("--out", help="also write the figures (JSON) to this file")
    args = parser.parse_args(argv)
    logs.configure("INFO", stream=open(os.devnull, "w"))  # the runs' lines are counted, not shown
    home = Path(tempfile.mkdtemp(prefix="totesys-etl-bookkeeping-"))
    cluster = moto = None
    try:
        cluster = servers.Postgres.create(home / "pg")
        moto = servers.MotoServer.start()
        settings = _pipeline(cluster, moto)
        from totesys_etl.local.source.seed import seed

        seed(cluster.url("bench"), orders=1000, seed=3)
        admin.grant_reader(cluster, "bench", _READER_PASSWORD)  # the seeded tables too
        figures = {"commits": args.commits, "subtransactions": args.subtransactions, "interleaved": args.interleaved,
                   "load_average_at_start": os.getloadavg()[0]}  # seconds measured on a busy machine read high
        measured_run(settings, cluster)  # the first run reads everything
        held, load = admin.admin_connection(cluster, "bench"), admin.admin_connection(cluster, "bench")
        held.run("BEGIN")
        held.run("CREATE TEMP TABLE held (n int)")
        held.run("SELECT pg_current_xact_id()")
        commit_interleaved(load, args.commits)
        figures["held"] = [measured_run(settings, cluster), measured_run(settings, cluster)]
        held.run("COMMIT")
        measured_run(settings, cluster)
        open_subtransactions(held, args.subtransactions)
        figures["subtransactions_runs"] = [measured_run(settings, cluster), measured_run(settings, cluster)]
        held.run("ROLLBACK")
        runs = figures["held"] + figures["subtransactions_runs"]
        for n, count in enumerate(args.interleaved):
            held.run("BEGIN")
            interleave_savepoints(held, load, count, 10_000_000 * (n + 1))
            during = [measured_run(settings, cluster), measured_run(settings, cluster)]
            held.run("COMMIT")
            after = [measured_run(settings, cluster), measured_run(settings, cluster)]
            figures[f"interleaved_{count}_runs"] = during + after
            # every department once: the other sessions' with the first run, the savepoints' after the commit
            rows = [r["rows"] for r in during + after]
            figures[f"interleaved_{count}_rows_as_expected"] = rows == [count, 0, count, 0]
            runs += during + after
        held.close()
        load.close()
        figures["load_average_at_end"] = os.getloadavg()[0]
        figures["within_bound"] = all(r["manifest_bytes"] < MANIFEST_LIMIT and r["bookkeeping_s"] < SECONDS_LIMIT
                                      for r in runs) and all(v for k, v in figures.items() if k.endswith("_expected"))
        text = json.dumps(figures, indent=1)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
        return 0 if figures["within_bound"] else 1
    finally:
        if moto is not None:
            moto.stop()
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


_READER_PASSWORD = "bookkeeping-" + os.urandom(6).hex()


def _pipeline(cluster: servers.Postgres, moto: servers.MotoServer) -> Settings:
    admin.create_database(cluster, "bench")
    admin.grant_reader(cluster, "bench", _READER_PASSWORD)
    os.environ.update({"AWS_ENDPOINT_URL": moto.endpoint, "AWS_DEFAULT_REGION": "eu-west-2",
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})  # nosec B105 - moto's dummies
    for key in [k for k in os.environ if k.startswith("TOTESYS_")]:
        del os.environ[key]
    s3 = boto3.client("s3")
    for bucket in ("bookkeeping-ingested", "bookkeeping-processed"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    return Settings.from_env({"TOTESYS_SOURCE_URL": cluster.url("bench", admin.READER_ROLE, _READER_PASSWORD),
                              "TOTESYS_INGEST_BUCKET": "bookkeeping-ingested",
                              "TOTESYS_PROCESSED_BUCKET": "bookkeeping-processed"})


if __name__ == "__main__":
    sys.exit(main())
