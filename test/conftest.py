"""Shared fixtures: one real PostgreSQL cluster and one moto server per test session.

Each test gets its own source database (with the read-only role granted), warehouse database
and pair of buckets, so tests never see each other's data. Nothing here is a mock.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import secrets
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import pg8000.native
import pytest

from totesys_etl.adapters import secrets as secrets_adapter
from totesys_etl.local.services import admin, servers

_counter = itertools.count()
REGION = "eu-west-2"


@dataclass
class Source:
    name: str
    admin_url: str
    reader_url: str


@pytest.fixture(scope="session")
def postgres():
    home = Path(tempfile.mkdtemp(prefix="totesys-etl-test-"))
    cluster = servers.Postgres.create(home / "pg")
    reader_password = secrets.token_urlsafe(12)
    cluster.reader_password = reader_password
    yield cluster
    cluster.stop()
    # Each test leaves its databases, about 300 files each: removing 600 took 20 s, and the session's
    # teardown was the last 45 to 50 s of a full run, though nothing after the session needs them
    # gone. A process of its own removes them instead (what `destroy` would remove).
    subprocess.Popen(["rm", "-rf", "--", str(home), str(cluster.folder)], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def moto_server():
    server = servers.MotoServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scratch_tmp(tmp_path_factory):
    """TMPDIR for the processes tests start: a crash test's `os._exit` skips the stages' temporary
    folder clean-up, and those folders then stay with pytest's own, not in the system's /tmp."""
    return str(tmp_path_factory.mktemp("subprocess-tmp"))


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A port nothing listens on, checked once: bound and released, then a connection refused.
    (Port 9 is not assumed closed: a machine may run a discard service there.)"""
    port = servers.free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    return port


@pytest.fixture(scope="session", autouse=True)
def _package_logger_at_start():
    """The package logger as the session found it, before any fixture configured it."""
    logger = logging.getLogger("totesys_etl")
    return logger.level, list(logger.handlers), logger.propagate


@pytest.fixture(autouse=True)
def _package_logger_restored(_package_logger_at_start):
    """A test that runs `cli.main` in-process sets the package logger's level and handlers for the
    command; the next test gets them back as the session started with them. (Not as this test found
    them: a module-scoped fixture that runs a stage, e.g. a seed, configures the logger before
    this fixture runs, and every later test, in any module, would inherit that.)"""
    logger = logging.getLogger("totesys_etl")
    yield
    level, handlers, propagate = _package_logger_at_start
    logger.setLevel(level)
    logger.handlers[:] = handlers
    logger.propagate = propagate


@pytest.fixture(autouse=True)
def _fresh_secrets():
    """Each test starts as a new Lambda container would: no secret cached from another test."""
    secrets_adapter.clear_cache()
    yield
    secrets_adapter.clear_cache()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, scratch_tmp, closed_port):
    """No test reads the developer's settings or `.local/env`; AWS calls never leave the machine."""
    monkeypatch.setenv("TMPDIR", scratch_tmp)
    for key in list(os.environ):
        if key.startswith(("TOTESYS_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")  # unreachable unless a test sets moto
    # Commands started from the repository would find its clone and keep their log lines in the
    # developer's .local/logs/: they keep them in a scratch clone instead.
    monkeypatch.setenv("TOTESYS_HOME", os.path.join(scratch_tmp, "clone"))


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_counter)}"


@pytest.fixture
def source(postgres) -> Source:
    """An empty source database; `reader_url` is the read-only role of contract §2."""
    name = unique("src")
    admin.create_database(postgres, name)
    admin.grant_reader(postgres, name, postgres.reader_password)
    return Source(name, postgres.url(name), postgres.url(name, admin.READER_ROLE, postgres.reader_password))


@pytest.fixture
def warehouse_url(postgres) -> str:
    name = unique("dw")
    admin.create_database(postgres, name)
    return postgres.url(name)


@pytest.fixture
def aws(moto_server, monkeypatch):
    """Point boto3 at the session's moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    return moto_server


@pytest.fixture
def buckets(aws):
    """A fresh (ingested, processed) bucket pair."""
    s3 = boto3.client("s3")
    names = (unique("ingested-"), unique("processed-"))
    for name in names:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return names


@pytest.fixture
def landing_bucket(aws, monkeypatch) -> str:
    """A fresh landing bucket for courier files (contract §9), named in TOTESYS_LANDING_BUCKET."""
    name = unique("landing-")
    boto3.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    monkeypatch.setenv("TOTESYS_LANDING_BUCKET", name)
    return name


@pytest.fixture
def pipeline_env(source, warehouse_url, buckets, monkeypatch):
    """Exactly the contract §5 variables a deployed pipeline sees, with a read-only source role."""
    monkeypatch.setenv("TOTESYS_SOURCE_URL", source.reader_url)
    monkeypatch.setenv("TOTESYS_SOURCE_ADMIN_URL", source.admin_url)
    monkeypatch.setenv("TOTESYS_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    return {k: v for k, v in os.environ.items() if k.startswith(("TOTESYS_", "AWS_"))}


def _run_sql(url: str, statement: str, **params):
    from totesys_etl.adapters.postgres import parse_url

    conn = pg8000.native.Connection(**parse_url(url))
    try:
        return conn.run(statement, **params)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def run_sql():
    """`run_sql(url, statement, **params)`: one statement against a database URL, its rows back."""
    return _run_sql


@pytest.fixture(scope="session")
def _fx_server():
    from totesys_etl.local.services.fx_api import FxApi

    api = FxApi.start(page_days=60)
    yield api
    api.stop()


@pytest.fixture
def fx_api(_fx_server):
    """The local FX stand-in (a real HTTP server on loopback), with no fault, nothing hidden and no
    requests recorded; a test sets TOTESYS_FX_API_URL to `fx_api.url` to turn the FX source on."""
    _fx_server.set_fault(None)
    _fx_server.latest = None
    _fx_server.requests.clear()
    yield _fx_server
    _fx_server.set_fault(None)
    _fx_server.latest = None
