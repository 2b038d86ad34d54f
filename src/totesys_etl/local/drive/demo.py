"""`totesys-etl demo`: the main job on a fresh machine, from nothing to a reconciled warehouse.

It works only on the services `up` started (it empties their warehouse and buckets first); it
never touches a database or bucket given through the environment.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pg8000.native
from pg8000.native import identifier

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.local.drive.reset import reset
from totesys_etl.local.drive.progress import Steps
from totesys_etl.local.services import lifecycle
from totesys_etl.report import warehouse_from_env, write_report

DEMO_CHANGES = 500
#: Courier delivery events dropped into the landing bucket before the second tick (contract §9), at
#: most two per seeded order.
DEMO_DELIVERIES = 1500


def _warehouse_counts(env: dict[str, str]) -> dict[str, int]:
    from totesys_etl.schema import API_FACTS, EVENT_FACTS, STAR_TABLES

    conn = pg8000.native.Connection(**parse_url(env["TOTESYS_WAREHOUSE_URL"]))
    try:
        return {t.name: conn.run(f"SELECT count(*) FROM {identifier(t.name)}")[0][0]  # nosec B608
                for t in (*STAR_TABLES, *API_FACTS, *EVENT_FACTS)}
    finally:
        conn.close()


def _sales_in_gbp(env: dict[str, str]) -> str:
    """One line: sales, purchases and payments to receive in GBP, as the report's headline reads them
    (the analytical views: each order at its agreed payment date's rate, open payments at the newest)."""
    from totesys_etl.report.figures import HEADLINE_GBP, OUTSTANDING_GBP, pounds

    conn = pg8000.native.Connection(**parse_url(env["TOTESYS_WAREHOUSE_URL"]))
    try:
        if conn.run("SELECT to_regclass('analytics.payments_outstanding')")[0][0] is None:
            return "sales in GBP: - (the warehouse has no GBP views yet)"
        sales, orders, unvalued = conn.run(HEADLINE_GBP["sales"])[0][:3]
        purchases = conn.run(HEADLINE_GBP["purchases"])[0][0]
        owed = {r[0]: r[1] for r in conn.run(OUTSTANDING_GBP)}
    finally:
        conn.close()
    return (f"sales in GBP: {pounds(sales)} over {orders - unvalued:,} of {orders:,} orders (the rest are due "
            f"after the newest FX date); purchases {pounds(purchases)}; payments to receive "
            f"{pounds(owed.get('to receive'))}")


def demo(home: Path, orders: int, out) -> int:
    from totesys_etl.reconcile import reconcile
    from totesys_etl.local.source.seed import seed
    from totesys_etl.local.source.simulate import simulate
    from totesys_etl.local.source.deliveries import simulate_deliveries
    from totesys_etl.local.drive.tick import tick

    started = time.perf_counter()
    step = Steps(out)
    env = step("start local PostgreSQL and moto's server (totesys-etl up)", lifecycle.up, home)
    os.environ.update(env)  # the demo runs on up's services, whatever the shell had set
    step("empty the warehouse and buckets that up created", reset, home, env)
    step(f"seed the source with {orders:,} sales orders", seed, env["TOTESYS_SOURCE_ADMIN_URL"], orders=orders)
    first = step("tick: first run (everything)", tick)
    print(f"   {first.summary()}", file=out)
    step(f"simulate {DEMO_CHANGES} OLTP changes", simulate, env["TOTESYS_SOURCE_ADMIN_URL"], changes=DEMO_CHANGES)
    deliveries = min(DEMO_DELIVERIES, 2 * orders)  # a small seed has orders for fewer
    dropped = step(f"drop courier files with {deliveries:,} delivery events (simulate --deliveries)",
                   simulate_deliveries, env["TOTESYS_SOURCE_ADMIN_URL"], env["TOTESYS_LANDING_BUCKET"],
                   deliveries, seed=1)
    print("   " + ", ".join(f"{k} {n:,}" for k, n in dropped.summary().items()), file=out)
    second = step("tick: incremental run", tick)
    print(f"   {second.summary()}", file=out)
    report = step("reconcile the warehouse with the source", reconcile)
    print(report.table(), file=out)

    print("\nwarehouse rows:", file=out)
    for table, count in _warehouse_counts(env).items():
        print(f"  {table:<22}{count:>10,}", file=out)
    print(_sales_in_gbp(env), file=out)
    stages = {s: first.seconds[s] + second.seconds[s] for s in first.seconds}
    print("handler seconds (both ticks): " + ", ".join(f"{s} {v:.2f}" for s, v in stages.items()), file=out)
    print(f"lake: s3://{env['TOTESYS_INGEST_BUCKET']} and s3://{env['TOTESYS_PROCESSED_BUCKET']} "
          f"at {env['AWS_ENDPOINT_URL']}", file=out)
    print("warehouse: set -a; . .local/env; set +a; psql \"$TOTESYS_WAREHOUSE_URL\"", file=out)
    page = step("write the report (totesys-etl report)", write_report, warehouse_from_env(env), home / "report.html")
    print(f"report: {page} (open it in a browser)", file=out)
    print(f"demo {'passed' if report.ok else 'FAILED'} in {time.perf_counter() - started:.0f}s", file=out)
    return 0 if report.ok else 1
