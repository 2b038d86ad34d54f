"""The admin steps on the local servers against the session's real PostgreSQL and moto server."""
from __future__ import annotations

import secrets

import boto3
import pg8000.native
import pytest

from totesys_etl.local.services import admin


def test_create_database_and_grant_reader_are_idempotent(postgres, run_sql):
    name = f"svc{secrets.token_hex(4)}"
    for _ in range(2):
        admin.create_database(postgres, name)
        admin.grant_reader(postgres, name, postgres.reader_password)
    admin_url, reader = postgres.url(name), postgres.url(name, admin.READER_ROLE, postgres.reader_password)
    run_sql(admin_url, "CREATE TABLE later (x int)")  # created after the grant: readable through default privileges
    run_sql(admin_url, "INSERT INTO later VALUES (1)")
    assert run_sql(reader, "SELECT x FROM later") == [[1]]
    assert run_sql(admin_url,
                   "SELECT rolsuper, rolcreatedb, rolcreaterole, pg_has_role(rolname, 'pg_monitor', 'MEMBER') "
                   "FROM pg_roles WHERE rolname = :r", r=admin.READER_ROLE) == [[False, False, False, False]]
    for statement in ("INSERT INTO later VALUES (2)", "CREATE TABLE mine (x int)", "CREATE SCHEMA mine"):
        with pytest.raises(pg8000.native.DatabaseError) as refused:
            run_sql(reader, statement)
        assert refused.value.args[0]["C"] == "42501", statement


def test_recreate_database_drops_its_sessions_and_data(postgres, run_sql):
    name = f"svc{secrets.token_hex(4)}"
    admin.create_database(postgres, name)
    run_sql(postgres.url(name), "CREATE TABLE t (x int)")
    open_session = pg8000.native.Connection("postgres", host="127.0.0.1", port=postgres.port, database=name,
                                            password=postgres.password, ssl_context=False)
    admin.recreate_database(postgres, name)
    assert run_sql(postgres.url(name), "SELECT count(*) FROM pg_tables WHERE tablename = 't'") == [[0]]
    with pytest.raises(pg8000.native.InterfaceError):
        open_session.run("SELECT 1")  # WITH (FORCE) closed it


def test_empty_buckets_creates_or_empties(buckets):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=buckets[0], Key="a/b", Body=b"x")
    fresh = f"fresh-{secrets.token_hex(4)}"
    admin.empty_buckets(s3, (buckets[0], fresh))
    assert s3.list_objects_v2(Bucket=buckets[0])["KeyCount"] == 0
    assert s3.list_objects_v2(Bucket=fresh)["KeyCount"] == 0
