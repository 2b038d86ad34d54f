"""Faults around the pipeline (issue 17): a late commit, a source or warehouse that refuses
connections for a tick, an S3 API that fails mid-run. Each ends as a clean run would."""
import json
import re

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.local.source.simulate import simulate

pytestmark = pytest.mark.slow

MS_NOW = "date_trunc('milliseconds', LOCALTIMESTAMP)"


def test_a_late_commit_arrives_once_however_old_its_last_updated(seeded, new_pipeline, tally, run_sql,
                                                                 against_oracle):
    """contract §3: a transaction that set `last_updated` before a run's cut-off and commits after it.

    It updates an order to the transaction's time, an order and an address to a moment far older
    than any overlap window, and inserts an order dated two hours back; a tick runs while it is
    open (as the read-only role sees it), then it commits, then two ticks: every version arrives
    exactly once, in the tick after the commit.
    """
    faulted = new_pipeline("f")
    faulted.tick()
    oldest = run_sql(seeded.admin_url, "SELECT sales_order_id FROM sales_order ORDER BY last_updated LIMIT 2")
    old_order, now_order = oldest[0][0], oldest[1][0]
    address = run_sql(seeded.admin_url, "SELECT address_id FROM address ORDER BY last_updated LIMIT 1")[0][0]
    late = pg8000.native.Connection(**parse_url(seeded.admin_url))
    try:
        late.run("START TRANSACTION")
        late.run(f"UPDATE sales_order SET units_sold = units_sold + 1, last_updated = {MS_NOW} "  # nosec B608
                 "WHERE sales_order_id = :id", id=now_order)
        late.run("UPDATE sales_order SET units_sold = units_sold + 7, last_updated = last_updated + interval '1 s' "
                 "WHERE sales_order_id = :id", id=old_order)
        late.run("UPDATE address SET city = 'Late Town', last_updated = last_updated + interval '1 s' "
                 "WHERE address_id = :id", id=address)
        new_order = late.run(
            "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
            "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id, created_at, last_updated) "
            f"SELECT design_id, staff_id, counterparty_id, 3, unit_price, currency_id, agreed_delivery_date, "
            f"agreed_payment_date, agreed_delivery_location_id, {MS_NOW} - interval '2 h', "
            f"{MS_NOW} - interval '2 h' FROM sales_order WHERE sales_order_id = :id RETURNING sales_order_id",
            id=old_order)[0][0]
        versions = late.run("SELECT sales_order_id, last_updated FROM sales_order "
                            "WHERE sales_order_id = ANY(CAST(:ids AS int[]))", ids=[old_order, now_order, new_order])
        faulted.tick()  # while the transaction is open: none of it is visible yet
        late.run("COMMIT")
    finally:
        late.close()
    tally.fault("late commit", 4)

    def arrived():
        facts = {(r[0], r[1]): r[2] for r in run_sql(
            faulted.warehouse_url, "SELECT sales_order_id, (last_updated_date + last_updated_time), count(*) "
            "FROM fact_sales_order GROUP BY 1, 2")}
        city = run_sql(faulted.warehouse_url, "SELECT city FROM dim_location WHERE location_id = :id", id=address)
        return [facts.get((i, lu), 0) for i, lu in versions], city[0][0]

    counts, city = arrived()
    assert counts == [0, 0, 0] and city != "Late Town"
    faulted.tick()
    assert arrived() == ([1, 1, 1], "Late Town")
    before = faulted.digest()
    faulted.tick()
    assert faulted.digest() == before and arrived() == ([1, 1, 1], "Late Town")  # once, never again
    reconciled = faulted.command("reconcile")
    assert reconciled.returncode == 0, reconciled.stdout
    against_oracle("a late commit", faulted)


def test_a_source_then_a_warehouse_that_refuse_connections_for_a_tick(seeded, new_pipeline, compare, tally,
                                                                      admin_sql, postgres, at_once):
    """Exit 1 with one line naming which database (never a credential), nothing written, and the
    next tick catches up with nothing lost."""
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    at_once(faulted.tick, clean.tick)
    simulate(seeded.admin_url, changes=40, seed=51)
    clean.tick()
    before, manifests = faulted.digest(), faulted.manifests(faulted.ingest_bucket)
    warehouse = parse_url(faulted.warehouse_url)["database"]
    for role, database in (("source", seeded.name), ("warehouse", warehouse)):
        admin_sql(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        try:
            refused = faulted.tick(expect=1)
        finally:
            admin_sql(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        tally.fault(f"{role} refusing connections")
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and role in lines[0] and "unavailable" in lines[0], refused.stderr
        assert faulted.leaks(refused) == [] and postgres.password in faulted.secrets().values()  # both roles
        assert faulted.digest() == before and faulted.manifests(faulted.ingest_bucket) == manifests
    caught_up = faulted.tick(extra={"TOTESYS_LOG_LEVEL": "INFO"})
    logged = [json.loads(line) for line in caught_up.stderr.splitlines()]
    assert {line["stage"] for line in logged} == {"ingest", "process", "load"}, caught_up.stderr[-2000:]
    assert "run loaded" in [line["message"] for line in logged]  # a successful run's INFO logs were seen,
    assert faulted.leaks(caught_up) == []                        # and they hold no credential
    compare("source, then warehouse, refusing connections for a tick", faulted, clean)


def test_an_s3_api_that_fails_once_at_each_stage(seeded, new_pipeline, compare, tally, flaky_s3, at_once,
                                                 marks_move):
    """Through a proxy in front of moto's server, one request fails per round: refused (403, which
    no client retries, so the stage fails and the next tick catches up), dropped before it reaches
    S3 (retried), or done by S3 with its answer lost (the retry finds a create-only key taken)."""
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    faulted.env["AWS_ENDPOINT_URL"] = flaky_s3.endpoint
    at_once(faulted.tick, clean.tick)
    ingested, processed = faulted.ingest_bucket, faulted.processed_bucket
    rounds = [  # (what, method, path, mode, the faulted tick's exit line, or None: it succeeds)
        ("an ingested CSV refused", "PUT", rf"^/{ingested}/sales_order/.*\.csv$", "403",
         rf"tick: s3://{ingested}/sales_order/\S+\.csv: AccessDenied$"),
        ("an ingested manifest written, its answer lost", "PUT", rf"^/{ingested}/_runs/", "lose", None),
        ("a Parquet file refused", "PUT", rf"^/{processed}/fact_sales_order/.*\.parquet$", "403",
         r"tick: 1 run\(s\) could not be processed: \d{8}T\d{12}Z \(S3 PutObject: AccessDenied\)$"),
        ("a processed manifest written, its answer lost", "PUT", rf"^/{processed}/_runs/", "lose", None),
        # The loader's line names the run but not the cause (reported: load/run.py `_load_each`).
        ("the loader's read of a Parquet file refused", "GET", rf"^/{processed}/etl_src_.*\.parquet", "403",
         r"tick: 1 run\(s\) not loaded: \d{8}T\d{12}Z"),
        ("an ingested CSV dropped on the way", "PUT", rf"^/{ingested}/[a-z_]+/year=.*\.csv$", "drop", None),
    ]
    for n, (what, method, path, mode, line) in enumerate(rounds):
        simulate(seeded.admin_url, changes=30, seed=60 + n)
        rule = flaky_s3.fail(method, path, mode=mode)
        first, _ = at_once(lambda: faulted.tick(expect=0 if line is None else 1), clean.tick)
        assert rule.failed == 1, f"{what}: the fault never fired"
        tally.fault(f"S3 {what}")
        if line is not None:
            lines = first.stderr.strip().splitlines()
            assert len(lines) == 1 and re.search(line, lines[0]), first.stderr
            faulted.tick()
        compare(f"S3: {what}", faulted, clean)
    assert faulted.command("reconcile").returncode == 0
    marks_move("after S3 failures", faulted)
