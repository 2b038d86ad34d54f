"""The few admin steps on the local servers: databases, the read-only role, emptied buckets.

Apart from `servers.py`, which starts and stops the processes: these steps work on any running
cluster (`up`'s, a test session's, the bench's scratch databases).
"""
from __future__ import annotations

import pg8000.native
from pg8000.native import identifier, literal

from totesys_etl.local.services.servers import Postgres

READER_ROLE = "totesys_reader"


def admin_connection(cluster: Postgres, database: str) -> pg8000.native.Connection:
    """The superuser's connection to `database` on a local cluster (no SSL: it listens on 127.0.0.1)."""
    return pg8000.native.Connection("postgres", host="127.0.0.1", port=cluster.port, database=database,
                                    password=cluster.password, ssl_context=False)


def admin_run(cluster: Postgres, database: str, *statements: str) -> None:
    """Run trusted statements (built from constants and `identifier()`) as the superuser."""
    conn = admin_connection(cluster, database)
    try:
        for statement in statements:
            conn.run(statement)
    finally:
        conn.close()


def create_database(cluster: Postgres, name: str) -> None:
    """Create `name` unless it exists (idempotent, unlike `recreate_database`)."""
    conn = admin_connection(cluster, "postgres")
    try:
        if not conn.run(f"SELECT 1 FROM pg_database WHERE datname = {literal(name)}"):  # nosec B608 - literal()
            conn.run(f"CREATE DATABASE {identifier(name)}")
    finally:
        conn.close()


def grant_reader(cluster: Postgres, database: str, password: str, role: str = READER_ROLE) -> None:
    """A login role that may read the source's tables and nothing else (contract §2).

    Default privileges make tables that `seed` creates later readable too.
    """
    role_q = identifier(role)
    admin_run(cluster, "postgres",
              f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal(role)}) THEN "  # nosec B608
              f"CREATE ROLE {role_q} LOGIN PASSWORD {literal(password)}; END IF; END $$",
              f"ALTER ROLE {role_q} LOGIN PASSWORD {literal(password)} NOSUPERUSER NOCREATEDB NOCREATEROLE")
    admin_run(cluster, database,
              "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
              f"GRANT CONNECT ON DATABASE {identifier(database)} TO {role_q}",
              f"GRANT USAGE ON SCHEMA public TO {role_q}",
              f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role_q}",
              f"ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON TABLES TO {role_q}")


def drop_database(cluster: Postgres, name: str) -> None:
    """Drop a database the local runtime owns, closing its sessions."""
    admin_run(cluster, "postgres", f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")


def recreate_database(cluster: Postgres, name: str) -> None:
    """Drop (closing its sessions) and create a database the local runtime owns: demo, bench."""
    drop_database(cluster, name)
    admin_run(cluster, "postgres", f"CREATE DATABASE {identifier(name)}")


def s3_client(env: dict[str, str]):
    """An S3 client for the endpoint, region and keys in `env` (`.local/env`'s AWS_* settings)."""
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def create_buckets(s3, names) -> set[str]:
    """Create each bucket that is missing; returns the names that existed already."""
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in names:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": s3.meta.region_name})
    return existing & set(names)


def empty_buckets(s3, names) -> None:
    """Create each bucket if missing, else delete every object in it (local buckets only)."""
    for bucket in create_buckets(s3, names):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
