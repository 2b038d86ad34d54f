"""`totesys-etl reset`, and the check `seed` makes first: a local pipeline starts again from a first run.

A source seeded anew under a lake and warehouse that already hold an earlier seed's rows leaves
`reconcile` out of step for good (ids that are gone, versions never shipped). So `seed` refuses
while the pipeline holds anything (contract §6), and `reset` empties what `up` created: the
warehouse database and `up`'s buckets with their queues. It never touches a database or bucket
given through the environment, and it keeps the source.
"""
from __future__ import annotations

from pathlib import Path

import boto3

from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import connect, parse_url
from totesys_etl.config import Settings
from totesys_etl.lake import RUNS_PREFIX
from totesys_etl.load.ledger import LEDGER
from totesys_etl.local.drive import notifications
from totesys_etl.local.services import admin, lifecycle


def reset(home: Path, env: dict[str, str]) -> list[str]:
    """Empty the warehouse database and the buckets of `env`, which must be `up`'s own settings
    (`lifecycle.up`'s result), and their queues; what was emptied, for the user."""
    warehouse = parse_url(env["TOTESYS_WAREHOUSE_URL"])["database"]
    admin.recreate_database(lifecycle.recorded_cluster(home), warehouse)
    emptied = [f"warehouse database {warehouse}"]
    buckets = [(env["TOTESYS_INGEST_BUCKET"], RUNS_PREFIX, ".json"),
               (env["TOTESYS_PROCESSED_BUCKET"], RUNS_PREFIX, ".json")]
    if env.get("TOTESYS_LANDING_BUCKET") == lifecycle.LANDING_BUCKET:  # the courier files' bucket up made
        buckets.append((lifecycle.LANDING_BUCKET, None, None))
    client = boto3.client("s3")
    for bucket, prefix, suffix in buckets:
        admin.empty_buckets(client, [bucket])
        notifications.purge(notifications.ensure(bucket, prefix=prefix, suffix=suffix))
        emptied.append(f"s3://{bucket}")
    return emptied


def pipeline_holds(settings: Settings) -> list[str]:
    """Where the pipeline of `settings` holds runs already: its buckets' manifests, the warehouse's
    ledger (empty: a `seed` is safe). One short listing per bucket and one query."""
    held = [f"runs in s3://{bucket}" for bucket in (settings.ingest_bucket, settings.processed_bucket)
            if next(s3.list_keys(bucket, RUNS_PREFIX, limit=1), None) is not None]
    if settings.warehouse.url:  # a local check: a warehouse named only by a secret is Lambda's
        conn = connect(settings.warehouse, application_name="totesys-etl seed")
        try:
            if conn.run("SELECT to_regclass(:t)", t=LEDGER)[0][0] is not None and \
                    conn.run(f"SELECT EXISTS (SELECT 1 FROM {LEDGER})")[0][0]:  # nosec B608 - a constant
                held.append("loaded runs in the warehouse")
        finally:
            conn.close()
    return held
