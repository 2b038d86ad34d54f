"""`make bench [ORDERS=N]`: the figures of contract §8, measured on the local services.

Every stage runs in a process of its own (`bench/stage.py`), as a Lambda invocation does, so a
stage's peak RSS and peak temporary files (what Lambda's /tmp must hold, `peak_tmp_mb`) are its
own and its imports are not hidden in another stage's process; its handler seconds are timed
inside that process, start-up reported apart.

The bench works only in databases and buckets of its own (`bench_*`, `totesys-etl-bench-*`) on
the cluster and S3 API that `up` started, and resets them at will; it never reads the
environment's `TOTESYS_*` settings, so it never touches a database or bucket given there.

Where a run happens is `bench/scratch.py`; the two baselines it is compared with (PostgreSQL's
own COPY floor, awswrangler's `to_sql`) are `bench/baselines.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 - the bench runs each stage as a process of its own
import sys
import time
from pathlib import Path
from typing import TextIO

from pg8000.native import identifier

from totesys_etl.bench.baselines import floor, to_sql_seconds
from totesys_etl.bench.results import STAGES, markdown, missed_targets
from totesys_etl.bench.scratch import BenchFailed, Pipeline, Services, admin_connection, prepare, settle
from totesys_etl.errors import EtlError
from totesys_etl.local.drive.progress import Steps
from totesys_etl.local.services import lifecycle
from totesys_etl.schema import DIMENSIONS, FACTS, FX_RATE, SOURCE_TABLES

DEFAULT_ORDERS = 100_000
TICK_CHANGES = 1000
SIMULATE_SEED = 8

#: The bench's scratch databases and buckets: its own, reset on every run.
MAIN = ("bench_source", "bench_warehouse", ("totesys-etl-bench-ingested", "totesys-etl-bench-processed"))
SNAPSHOT = ("bench_snapshot_source", "bench_snapshot_warehouse",
            ("totesys-etl-bench-snapshot-ingested", "totesys-etl-bench-snapshot-processed"))


# --- stages, each in its own process ------------------------------------------------------------

def run_stage(stage: str, env: dict[str, str], event: dict, log_path: Path) -> dict:
    """One handler call in a new process (`bench/stage.py`); its measured outcome.

    The child gets only the pipeline's settings (none of this process's `TOTESYS_*`/`AWS_*`), and
    its JSON log lines are appended to `log_path`. Raises BenchFailed when the handler raised.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "AWS_"))}
    child_env.update(env)
    command = [sys.executable, "-m", "totesys_etl.bench.stage", stage, json.dumps(event),
               "--started", repr(time.time())]
    with open(log_path, "ab") as log:
        done = subprocess.run(command, env=child_env, stdout=subprocess.PIPE, stderr=log)  # nosec B603
    lines = done.stdout.decode().strip().splitlines()
    try:
        outcome = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise BenchFailed(f"the {stage} process exited {done.returncode} without a result "
                          f"(its log: {log_path})") from None
    if done.returncode != 0 or "error" in outcome:
        raise BenchFailed(f"the {stage} handler failed: {outcome.get('error')} (its log: {log_path})")
    return outcome


def run_cycle(env: dict[str, str], log_path: Path) -> dict[str, dict]:
    """Ingest (a scheduled event), then the processor's and the loader's sweeps (`{}`).

    Each stage starts after `os.sync()`: the lake's files the stage before it wrote are on disk,
    not flushed during its own clock (deployed, S3 holds them; `scratch.settle`).
    """
    from totesys_etl.local.drive.tick import scheduled_event

    cycle = {}
    for stage in STAGES:
        os.sync()
        cycle[stage] = run_stage(stage, env, scheduled_event() if stage == "ingest" else {}, log_path)
    return cycle


def handler_seconds(cycle: dict[str, dict]) -> float:
    return round(sum(outcome["handler_s"] for outcome in cycle.values()), 4)


def stage_rows(outcome: dict) -> int:
    """Rows a stage handled, from its handler's own summary."""
    result = outcome.get("result") or {}
    if outcome["stage"] == "ingest":
        return sum(result.get("rows", {}).values())
    return sum(sum(run.get("rows", {}).values()) for run in result.get("runs", []))


# --- what the source holds, and does the warehouse hold it ------------------------------------

def source_counts(svc: Services, database: str) -> dict[str, int]:
    conn = admin_connection(svc, database)
    try:
        return {t.name: conn.run(f"SELECT count(*) FROM {identifier(t.name)}")[0][0]  # nosec B608 - declared
                for t in SOURCE_TABLES}
    finally:
        conn.close()


def count_mismatches(svc: Services, pipeline: Pipeline) -> list[str]:
    """Dimensions hold one row per source row, facts every source id (their newest version at least).

    Row counts only (`reconcile` compares values): cheap at a million orders, and enough to catch
    a stage that lost or doubled rows while being timed.
    """
    expected = source_counts(svc, pipeline.source_db)
    conn = admin_connection(svc, pipeline.warehouse_db)
    problems = []
    try:
        for dimension in DIMENSIONS:
            got = conn.run(f"SELECT count(*) FROM {identifier(dimension.name)}")[0][0]  # nosec B608
            if got != expected[dimension.source]:
                problems.append(f"{dimension.name} has {got:,} rows, {dimension.source} {expected[dimension.source]:,}")
        for fact in FACTS:
            key = identifier(fact.version_key[0])
            got = conn.run(f"SELECT count(DISTINCT {key}) FROM {identifier(fact.name)}")[0][0]  # nosec B608
            if got != expected[fact.source]:
                problems.append(f"{fact.name} has {got:,} ids, {fact.source} {expected[fact.source]:,}")
    finally:
        conn.close()
    return problems


# --- the machine --------------------------------------------------------------------------------

def machine(svc: Services) -> dict:
    """What the figures were measured on (the README's table names it)."""
    cpu, ram_kb = "unknown", 0
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
        ram_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")), 0)
    except OSError:
        pass
    conn = admin_connection(svc, "postgres")
    try:
        version = conn.run("SHOW server_version")[0][0]
    finally:
        conn.close()
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(ram_kb / 1024 / 1024, 1),
            "postgresql": version, "python": sys.version.split()[0]}


# --- the run ------------------------------------------------------------------------------------

def _check(problems: list[str], when: str) -> None:
    if problems:
        raise BenchFailed(f"after {when} the warehouse does not match the source: " + "; ".join(problems))


def run_bench(svc: Services, orders: int, workdir: Path, out: TextIO, skip_baselines: bool = False,
              part_rows: int | None = None) -> dict:
    """Every contract §8 figure (plus the detail behind them); BenchFailed when a stage or a check failed.

    `svc.aws` must also be this process's S3 settings (the to_sql comparison reads the lake here).
    `skip_baselines` leaves out the typical loader (`to_sql`, three quarters of a 1M run), for
    profiling loops: `speedup_vs_to_sql` is then null. The floor stays, since the ratio needs it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "bench.log"
    log_path.write_text("")
    step = Steps(out)
    started = time.perf_counter()
    load_before = os.getloadavg()
    from totesys_etl.local.source.seed import seed
    from totesys_etl.local.source.simulate import simulate
    from totesys_etl.local.source.snapshot import load_snapshot

    main = Pipeline(*MAIN)
    env = {**main.env(svc), **parts_env(part_rows)}
    step("fresh scratch source, warehouse and buckets", prepare, svc, main)
    counts = step(f"seed the source with {orders:,} sales orders", seed, env["TOTESYS_SOURCE_ADMIN_URL"],
                  orders=orders)
    source_rows = sum(counts.values())
    step("settle the source: VACUUM (FREEZE, ANALYZE), CHECKPOINT, sync", settle, svc, main.source_db)
    initial = step("initial load: ingest, process, load (a process each)", run_cycle, env, log_path)
    _check(count_mismatches(svc, main), "the initial load")
    step("settle the warehouse: VACUUM (FREEZE, ANALYZE), CHECKPOINT, sync", settle, svc, main.warehouse_db)
    floor_tables = step("floor: COPY out and in of the 11 tables (psql, one connection)", floor, svc,
                        main.source_db, workdir)
    to_sql_s = None if skip_baselines else step(
        "typical loader: awswrangler to_sql upsert, chunksize 1000", to_sql_seconds, svc, main,
        initial["ingest"]["result"]["run_id"], workdir)
    noop = step("tick with no changes", run_cycle, env, log_path)
    step(f"simulate {TICK_CHANGES:,} changes", simulate, env["TOTESYS_SOURCE_ADMIN_URL"], changes=TICK_CHANGES,
         seed=SIMULATE_SEED)
    tick_1000 = step(f"tick after {TICK_CHANGES:,} changes", run_cycle, env, log_path)
    _check(count_mismatches(svc, main), f"the tick after {TICK_CHANGES:,} changes")

    snap = Pipeline(*SNAPSHOT)
    snap_env = snap.env(svc)
    step("fresh scratch source, warehouse and buckets for the snapshot", prepare, svc, snap)
    step("load the real snapshot into the snapshot source", load_snapshot, snap_env["TOTESYS_SOURCE_ADMIN_URL"])
    snapshot = step("snapshot load: ingest, process, load (a process each)", run_cycle, snap_env, log_path)
    _check(count_mismatches(svc, snap), "the snapshot load")

    initial_load_s = handler_seconds(initial)
    floor_out = round(sum(t["out"] for t in floor_tables.values()), 4)
    floor_s = round(floor_out + sum(t["in"] for t in floor_tables.values()), 4)
    results = {
        "orders": counts["sales_order"],
        "initial_load_s": initial_load_s,
        "process_start_s": round(sum(o["process_start_s"] for o in initial.values()), 4),
        "floor_s": floor_s,
        "ratio_to_floor": round(initial_load_s / floor_s, 3),
        "speedup_vs_to_sql": None if to_sql_s is None else round(to_sql_s / initial["load"]["handler_s"], 2),
        "noop_tick_handler_s": handler_seconds(noop),
        "tick_1000_handler_s": handler_seconds(tick_1000),
        "peak_rss_mb": {s: initial[s]["peak_rss_mb"] for s in STAGES},
        "peak_tmp_mb": {s: initial[s]["peak_tmp_mb"] for s in STAGES},
        "snapshot_load_s": {s: snapshot[s]["handler_s"] for s in STAGES},
        "detail": {
            "source_rows": counts,
            "initial_load": {s: {"handler_s": initial[s]["handler_s"], "process_start_s": initial[s]["process_start_s"],
                                 "process_start_cpu_s": initial[s]["process_start_cpu_s"],
                                 "rows": stage_rows(initial[s]),
                                 "source_rows_per_s": round(source_rows / initial[s]["handler_s"]),
                                 "peak_rss_mb": initial[s]["peak_rss_mb"],
                                 "peak_tmp_mb": initial[s]["peak_tmp_mb"]} for s in STAGES},
            # None: no FX stand-in ran, so the pipelines fetched no rates (a deployed one does).
            "fx_rates": initial["ingest"]["result"]["rows"].get(FX_RATE.name, 0) if svc.fx_api_url else None,
            "floor_s": floor_tables, "floor_copy_out_s": floor_out, "floor_copy_in_s": round(floor_s - floor_out, 4),
            "to_sql_s": to_sql_s, "our_load_s": initial["load"]["handler_s"],
            "noop_tick_s": {s: noop[s]["handler_s"] for s in STAGES},
            "noop_tick_rows": {s: stage_rows(noop[s]) for s in STAGES},
            "tick_1000_s": {s: tick_1000[s]["handler_s"] for s in STAGES},
            "tick_1000_rows": {s: stage_rows(tick_1000[s]) for s in STAGES},
            "snapshot_rows": {s: stage_rows(snapshot[s]) for s in STAGES},
            "sanity": "warehouse dimension rows and fact ids match the source (initial load, tick, snapshot)",
            "machine": {**machine(svc), "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()]},
            "parts": parts_detail(initial, env),
            "steps_s": step.seconds,
            "bench_s": round(time.perf_counter() - started, 1),
        },
    }
    return results


def parts_env(part_rows: int | None) -> dict[str, str]:
    """A first load in parts fans out as under `tick` (child processes) when it is too big for one
    invocation (`fanout.handles_whole`). `part_rows` sets the part size and measures the fanned-out
    path itself, at any size: a part per invocation for the processor and the loader."""
    if not part_rows:
        return {"TOTESYS_FANOUT": "local"}
    return {"TOTESYS_FANOUT": "local", "TOTESYS_PART_ROWS": str(part_rows), "TOTESYS_WHOLE_RUN_ROWS": "1"}


def parts_detail(initial: dict[str, dict], env: dict[str, str]) -> dict:
    """The first load's parts (contract §4 "Parts"): how many per ingested table, each stage's
    largest invocation (seconds, peak RSS, peak /tmp), and the first load's wall time.

    A processor part is a process of its own (the local fan-out), measured by itself; the /tmp
    figure is the whole stage's (its part processes write in the same folder), so per invocation it
    is an upper bound. The processor's handler seconds include waiting for its parts, so the sum of
    the three stages is the first load's wall time with the parts in parallel.
    """
    from totesys_etl import manifest as manifests

    run_id = initial["ingest"]["result"]["run_id"]
    files = manifests.read(env["TOTESYS_INGEST_BUCKET"], run_id)["files"]
    largest = {}
    for stage, outcome in initial.items():
        parts = outcome.get("parts", [])
        # The run's own invocation waits for its parts here (in AWS it returns at once), so its
        # seconds are the parts' wall time; a part's are its own.
        invocations = [{"seconds": outcome["handler_s"], "peak_rss_mb": outcome["peak_rss_mb"]}, *parts]
        largest[stage] = {"invocations": len(invocations),
                          "max_s": max(i["seconds"] or 0 for i in (parts or invocations)),
                          "max_peak_rss_mb": max(i["peak_rss_mb"] or 0 for i in invocations),
                          "max_peak_tmp_mb": outcome["peak_tmp_mb"]}
        if parts:
            largest[stage]["run_invocation_s"] = outcome["handler_s"]
            largest[stage]["part_s"] = sorted(round(p["seconds"] or 0, 2) for p in parts)
    return {"part_rows": int(env.get("TOTESYS_PART_ROWS") or 0) or None,
            "ingested_parts": {t: len(e["parts"]) for t, e in sorted(files.items()) if "parts" in e},
            "per_invocation": largest,
            "first_load_wall_s": handler_seconds(initial)}


def local_services(home: Path) -> Services:
    """`up`'s services (started if none run), as the bench's Services; this process's S3 settings too."""
    env = lifecycle.up(home)
    state = json.loads((home / "services.json").read_text())
    cluster = lifecycle.recorded_cluster(home)
    aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
    for key in [k for k in os.environ if k.startswith(("TOTESYS_", "AWS_"))]:
        del os.environ[key]  # the bench never works on a setup given through the environment
    os.environ.update(aws)
    return Services(cluster, state["reader_password"], aws, env.get("TOTESYS_FX_API_URL"))


def _courier(svc: Services, home: Path, megabytes: float, out: TextIO) -> dict:
    from totesys_etl.bench.courier import courier_bench

    log_path = home / "bench-courier.log"
    log_path.write_text("")
    return Steps(out)(f"courier file of {megabytes:g} MB: ingest, process, load (a process each)", courier_bench,
                      svc, megabytes, home, log_path, run_stage)


def _courier_only(svc: Services, home: Path, megabytes: float, out: TextIO) -> int:
    """The courier figure alone, written into bench.json beside the keys a full bench left there."""
    path = home / "bench.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["courier"] = _courier(svc, home, megabytes, out)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["courier"], indent=1), file=out)
    return 0


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m totesys_etl.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS, help="sales orders to seed (default 100,000)")
    parser.add_argument("--home", type=Path, default=Path(".local"), help="up's folder (default .local)")
    parser.add_argument("--skip-baselines", action="store_true",
                        help="leave out the typical loader (to_sql), for profiling loops; the floor stays")
    parser.add_argument("--courier-mb", type=float, default=float(os.environ.get("COURIER_MB") or 0),
                        help="also ingest one courier file of about this many MB (key `courier`; default 0: "
                             "not measured; env COURIER_MB)")
    parser.add_argument("--part-rows", type=int, default=int(os.environ.get("PART_ROWS") or 0) or None,
                        help="TOTESYS_PART_ROWS for the first load (default: the pipeline's, 2,000,000; env "
                             "PART_ROWS): a smaller one measures a first load in parts at a small size, each "
                             "part by an invocation of its own")
    parser.add_argument("--courier-only", action="store_true",
                        help="measure only the courier figure, kept beside the other keys of bench.json")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.courier_mb < 0 or (args.courier_only and not args.courier_mb):
        print("bench: --orders must be 1 or more, --courier-mb 0 or more (and given with --courier-only)",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        svc = local_services(args.home)
        if args.courier_only:
            return _courier_only(svc, args.home, args.courier_mb, out)
        results = run_bench(svc, args.orders, args.home, out, skip_baselines=args.skip_baselines,
                            part_rows=args.part_rows)
        if args.courier_mb:
            results["courier"] = _courier(svc, args.home, args.courier_mb, out)
    except EtlError as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return 1
    results["detail"]["bench_s"] = round(time.perf_counter() - started, 1)
    (args.home / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n" + markdown(results), file=out)
    missed = missed_targets(results)
    print(f"\nwrote {args.home / 'bench.json'}; " + ("every target met" if not missed else
          "targets missed: " + ", ".join(f"{k} {v:g} > {lim:g}" for k, (v, lim) in missed.items())), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
