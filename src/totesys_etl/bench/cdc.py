"""`make bench MODE=cdc`: contract §8's first-load ratio, no-op tick and 1,000-change tick with the
ingest in cdc mode (contract §10), written to `.local/bench-cdc.json` beside the poll mode's figures
that `make bench` left in `.local/bench.json`.

Same machinery as the poll bench (bench/run.py: each stage in a process of its own, handler seconds
timed inside it, the same floor), on scratch databases and buckets of its own (`bench_cdc_*`,
`totesys-etl-bench-cdc-*`). The DBA steps run after `seed` made the tables, as readme_files/cdc.md
orders them, so the first tick is the snapshot a new deployment takes. The floor comes last, since
its scratch tables' WAL would otherwise sit in what the ticks' slot reads decode. The slot is dropped whatever
happens: an unread slot keeps WAL for ever (and keeps its database from being dropped).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import TextIO

from totesys_etl.bench.baselines import floor
from totesys_etl.bench.results import STAGES
from totesys_etl.bench.run import (DEFAULT_ORDERS, SIMULATE_SEED, TICK_CHANGES, _check, count_mismatches,
                                   handler_seconds, local_services, run_cycle, stage_rows)
from totesys_etl.bench.scratch import Pipeline, Services, admin_connection, prepare
from totesys_etl.errors import EtlError
from totesys_etl.local.drive.progress import Steps
from totesys_etl.local.source import cdc as cdc_setup

CDC = Pipeline("bench_cdc_source", "bench_cdc_warehouse",
               ("totesys-etl-bench-cdc-ingested", "totesys-etl-bench-cdc-processed"))
#: The bench's slot, publication and replication role (its own, never the ones `up` made).
SLOT = PUBLICATION = ROLE = "totesys_bench_cdc"
#: The figures set beside the poll mode's, by key.
COMPARED = ("orders", "initial_load_s", "floor_s", "ratio_to_floor", "noop_tick_handler_s", "tick_1000_handler_s")


def _drop_slot(svc: Services) -> None:
    """Drop the bench's slot if its source database holds one (a logical slot is dropped from its own database)."""
    conn = admin_connection(svc, "postgres")
    try:
        exists = conn.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s AND database = :d",
                          s=SLOT, d=CDC.source_db)
    finally:
        conn.close()
    if exists:
        conn = admin_connection(svc, CDC.source_db)
        try:
            cdc_setup.drop_slot(conn, SLOT)
        finally:
            conn.close()


def _dba_steps(svc: Services) -> str:
    """Publication, REPLICA IDENTITY FULL, slot and a LOGIN REPLICATION role; that role's URL."""
    password = secrets.token_urlsafe(16)
    conn = admin_connection(svc, CDC.source_db)
    try:
        cdc_setup.prepare_tables(conn, PUBLICATION)
        cdc_setup.grant_cdc_role(conn, CDC.source_db, password, ROLE)
        cdc_setup.create_slot(conn, SLOT)
    finally:
        conn.close()
    return svc.cluster.url(CDC.source_db, ROLE, password)


def _flushed(svc: Services, timeout_s: float = 10.0) -> None:
    """Wait until the WAL written so far is flushed: a slot decodes flushed WAL only, and the local
    cluster commits asynchronously, so the tick after `simulate` would otherwise miss its last commits."""
    conn = admin_connection(svc, CDC.source_db)
    try:
        target = conn.run("SELECT pg_current_wal_insert_lsn()::text")[0][0]
        deadline = time.monotonic() + timeout_s
        while not conn.run("SELECT pg_current_wal_flush_lsn() >= CAST(:t AS pg_lsn)", t=target)[0][0]:
            if time.monotonic() > deadline:
                raise EtlError(f"the source's WAL was not flushed within {timeout_s:g} s")
            time.sleep(0.05)
    finally:
        conn.close()


def cdc_bench(svc: Services, orders: int, workdir: Path, out: TextIO, poll: dict | None = None) -> dict:
    """The cdc-mode figures (keys as contract §8's, `mode: "cdc"`), with `poll` (the poll bench's
    results, if any) set beside them under `"poll"`; BenchFailed when a stage or a check failed."""
    from totesys_etl.local.source.seed import seed
    from totesys_etl.local.source.simulate import simulate

    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    log_path = workdir / "bench-cdc.log"
    log_path.write_text("")
    step = Steps(out)
    started = time.perf_counter()
    _drop_slot(svc)  # one a killed bench left behind would keep its database from being recreated
    step("fresh scratch source, warehouse and buckets (cdc)", prepare, svc, CDC)
    env = CDC.env(svc)
    counts = step(f"seed the source with {orders:,} sales orders", seed, env["TOTESYS_SOURCE_ADMIN_URL"], orders=orders)
    try:
        url = step("the DBA steps: publication, REPLICA IDENTITY FULL, slot, replication role", _dba_steps, svc)
        env.update({"TOTESYS_SOURCE_URL": url, "TOTESYS_SOURCE_MODE": "cdc", "TOTESYS_CDC_SLOT": SLOT,
                    "TOTESYS_CDC_PUBLICATION": PUBLICATION})
        initial = step("initial load in cdc mode: snapshot, process, load (a process each)", run_cycle, env, log_path)
        _check(count_mismatches(svc, CDC), "the initial load")
        noop = step("tick with no changes (cdc)", run_cycle, env, log_path)
        step(f"simulate {TICK_CHANGES:,} changes", simulate, env["TOTESYS_SOURCE_ADMIN_URL"], changes=TICK_CHANGES,
             seed=SIMULATE_SEED)
        _flushed(svc)
        tick_1000 = step(f"tick after {TICK_CHANGES:,} changes (cdc)", run_cycle, env, log_path)
        _check(count_mismatches(svc, CDC), f"the tick after {TICK_CHANGES:,} changes")
        # Last: the floor's scratch tables write WAL in the source, which a tick's slot read would decode
        # (the poll bench takes it after the initial load; 1,000 changes move it by a fraction of a per cent).
        floor_tables = step("floor: COPY out and in of the 11 tables (psql, one connection)", floor, svc,
                            CDC.source_db, workdir)
    finally:
        _drop_slot(svc)
    initial_load_s = handler_seconds(initial)
    floor_s = round(sum(t["out"] + t["in"] for t in floor_tables.values()), 4)
    results = {
        "mode": "cdc",
        "orders": counts["sales_order"],
        "initial_load_s": initial_load_s,
        "floor_s": floor_s,
        "ratio_to_floor": round(initial_load_s / floor_s, 3),
        "noop_tick_handler_s": handler_seconds(noop),
        "tick_1000_handler_s": handler_seconds(tick_1000),
        "peak_rss_mb": {s: initial[s]["peak_rss_mb"] for s in STAGES},
        "detail": {
            "source_rows": counts,
            "initial_load_s": {s: initial[s]["handler_s"] for s in STAGES},
            "initial_load_rows": {s: stage_rows(initial[s]) for s in STAGES},
            "noop_tick_s": {s: noop[s]["handler_s"] for s in STAGES},
            "tick_1000_s": {s: tick_1000[s]["handler_s"] for s in STAGES},
            "tick_1000_rows": {s: stage_rows(tick_1000[s]) for s in STAGES},
            "sanity": "warehouse dimension rows and fact ids match the source (initial load, tick)",
            # the figures move with what else runs on the machine: read them beside these
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "bench_s": round(time.perf_counter() - started, 1),
        },
    }
    if poll:
        results["poll"] = {k: poll.get(k) for k in COMPARED}
    return results


def markdown(results: dict) -> str:
    """The figures of both modes side by side (poll: `-` when no poll bench ran)."""
    poll = results.get("poll") or {}
    lines = ["| figure | poll | cdc |", "|---|---|---|"]
    for key in COMPARED:
        lines.append(f"| {key} | {poll.get(key, '-') if poll.get(key) is not None else '-'} | {results[key]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m totesys_etl.bench.cdc", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS, help="sales orders to seed (default 100,000)")
    parser.add_argument("--home", type=Path, default=Path(".local"), help="up's folder (default .local)")
    args = parser.parse_args(argv)
    if args.orders < 1:
        print("bench: --orders must be 1 or more", file=sys.stderr)
        return 2
    poll_path = args.home / "bench.json"
    poll = json.loads(poll_path.read_text()) if poll_path.exists() else None
    try:
        svc = local_services(args.home)
        results = cdc_bench(svc, args.orders, args.home, out, poll)
    except EtlError as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return 1
    (args.home / "bench-cdc.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n" + markdown(results), file=out)
    hint = "" if poll else " (no bench.json: `make bench` gives the poll mode's figures to set beside these)"
    print(f"\nwrote {args.home / 'bench-cdc.json'}{hint}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
