"""Where a bench run happens: the cluster and S3 API `up` started, and the bench's own scratch
databases and buckets, reset at will (never one given through the environment)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pg8000.native

from totesys_etl.errors import EtlError
from totesys_etl.local.services import admin, servers


class BenchFailed(EtlError):
    """A stage failed, or the warehouse does not hold what the source does: the figures mean nothing."""

    error_kind = "bench_failed"


@dataclass(frozen=True)
class Services:
    """Where the bench runs: a PostgreSQL cluster it may create databases in, and an S3 API."""

    cluster: servers.Postgres
    reader_password: str
    aws: dict[str, str]  # AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and dummy keys
    fx_api_url: str | None = None  # the FX stand-in `up` started: the pipelines fetch rates as deployed ones do

    def admin_url(self, database: str) -> str:
        return self.cluster.url(database)

    def reader_url(self, database: str) -> str:
        return self.cluster.url(database, admin.READER_ROLE, self.reader_password)


@dataclass(frozen=True)
class Pipeline:
    """A source database, a warehouse database and a bucket pair: one pipeline's contract §5 settings."""

    source_db: str
    warehouse_db: str
    buckets: tuple[str, str]

    def env(self, svc: Services) -> dict[str, str]:
        """Exactly what a deployed handler sees: a read-only source role, the warehouse, the buckets."""
        return {"TOTESYS_SOURCE_URL": svc.reader_url(self.source_db),
                "TOTESYS_SOURCE_ADMIN_URL": svc.admin_url(self.source_db),
                "TOTESYS_WAREHOUSE_URL": svc.admin_url(self.warehouse_db),
                "TOTESYS_INGEST_BUCKET": self.buckets[0], "TOTESYS_PROCESSED_BUCKET": self.buckets[1],
                **({"TOTESYS_FX_API_URL": svc.fx_api_url} if svc.fx_api_url else {}), **svc.aws}


def admin_connection(svc: Services, database: str) -> pg8000.native.Connection:
    return admin.admin_connection(svc.cluster, database)


def fresh_database(svc: Services, name: str) -> None:
    """Drop and create one of the bench's own databases (names are this module's constants)."""
    admin.recreate_database(svc.cluster, name)


def drop_database(svc: Services, name: str) -> None:
    admin.drop_database(svc.cluster, name)


def fresh_buckets(svc: Services, names: tuple[str, ...]) -> None:
    """The bench's own buckets, existing and empty."""
    admin.empty_buckets(admin.s3_client(svc.aws), names)


def prepare(svc: Services, pipeline: Pipeline) -> None:
    """A fresh, empty source (readable by the read-only role), warehouse and bucket pair."""
    for database in (pipeline.source_db, pipeline.warehouse_db):
        fresh_database(svc, database)
    admin.grant_reader(svc.cluster, pipeline.source_db, svc.reader_password)
    fresh_buckets(svc, pipeline.buckets)


def settle(svc: Services, *databases: str) -> None:
    """Leave nothing of the steps before a timed one still to do or to write, as if it ran alone.

    Each of `databases` first gets `VACUUM (FREEZE, ANALYZE)`:
    - a freshly seeded source, never vacuumed: autovacuum (insert-triggered since PostgreSQL 13) would
      work through it, every page (3.3 GB at 10M orders), while the timed stages run; a source that
      has run for years has been vacuumed;
    - a freshly loaded warehouse, before the floor: autovacuum would otherwise work through the
      load's rows while the floor runs.
    Then a `CHECKPOINT` and `os.sync()`: what the cluster and the lake's files left dirty is on disk
    before the clock starts. Deployed, the source, the lake and the warehouse are separate
    machines; here they share one disk, and at 10M orders the writes one step left behind were
    flushed during the next.
    """
    for database in databases:
        admin.admin_run(svc.cluster, database, "VACUUM (FREEZE, ANALYZE)")
    admin.admin_run(svc.cluster, "postgres", "CHECKPOINT")
    os.sync()
