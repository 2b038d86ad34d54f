"""A pooler (contract §2): through PgBouncer in transaction mode the ingest works, and it never holds a
lock it believes it does not. Debian's pgbouncer, started by the test in front of its own cluster."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess  # nosec B404 - the pooler under test
import threading

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.config import Settings
from totesys_etl.ingest.run import ingest
from totesys_etl.local.services import admin, servers

pytestmark = pytest.mark.slow
#: The settings pg8000 sends at start-up that a pooler in transaction mode must ignore (it cannot keep
#: them per client); readme_files/operations.md names them for a deployment behind PgBouncer.
IGNORED = ("statement_timeout,idle_in_transaction_session_timeout,tcp_keepalives_idle,tcp_keepalives_interval,"
           "tcp_keepalives_count,extra_float_digits")


@pytest.fixture
def pgbouncer(own_source, cluster_home):
    folder = cluster_home / "pgbouncer"
    folder.mkdir()
    port = servers.free_port()
    (folder / "users.txt").write_text(f'"{admin.READER_ROLE}" "{own_source.reader_password}"\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"totesys = host=127.0.0.1 port={own_source.cluster.port} dbname=totesys\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\nmin_pool_size = 3\nserver_round_robin = 1\n"
        f"ignore_startup_parameters = {IGNORED}\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n")
    if os.geteuid() == 0:
        for path in (folder, folder / "users.txt", folder / "pgbouncer.ini"):
            shutil.chown(path, servers.RUN_AS_USER)
    command = servers._run_as() + [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", str(folder / "pgbouncer.ini")]
    process = subprocess.Popen(command,  # nosec B603 - the pooler under test
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    servers.wait_for_port(port)
    url = own_source.reader_url.replace(f":{own_source.cluster.port}/", f":{port}/")
    _warm(url, 3)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=10)


def _warm(url: str, servers_wanted: int) -> None:
    """Make the pooler open `servers_wanted` server connections (clients in transactions at once):
    with `server_round_robin` it then hands consecutive transactions to different ones."""
    clients = [pg8000.native.Connection(**parse_url(url)) for _ in range(servers_wanted)]
    for client in clients:
        client.run("BEGIN")
        client.run("SELECT 1")
    for client in clients:
        client.run("COMMIT")
        client.close()


def _run_within(seconds: float):
    result: list = []
    worker = threading.Thread(target=lambda: result.append(ingest(Settings.from_env())), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"the ingest did not finish within {seconds} s through the pooler"
    return result[0]


def test_through_pgbouncer_in_transaction_mode_runs_read_incrementally_and_hold_no_lock(
        own_source, pgbouncer, monkeypatch, shipped):
    monkeypatch.setenv("TOTESYS_SOURCE_URL", pgbouncer)
    first = _run_within(60)
    assert first.rows["staff"] == 3
    own_source.run("UPDATE staff SET first_name = 'Pooled', last_updated = LOCALTIMESTAMP WHERE staff_id = 2")
    second = _run_within(60)
    assert {t: [r[f"{t}_id"] for r in rows] for t, rows in shipped(second).items()} == {"staff": ["2"]}
    assert _run_within(60).files == 0
    # Every server connection the pooler keeps is free of the pipeline's locks.
    assert own_source.run("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [[0]]
