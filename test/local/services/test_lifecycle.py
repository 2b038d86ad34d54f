"""`up`/`down` bookkeeping against the session's real PostgreSQL and moto server."""
from __future__ import annotations

import json
import os
import pwd

import pg8000.native
import urllib3

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.local.services import admin, lifecycle, servers
from totesys_etl.local.services.fx_api import FxApiProcess


def test_settings_are_the_spec_variables_with_the_read_only_source(postgres):
    state = {"postgres": {"data_dir": str(postgres.data_dir), "port": postgres.port, "password": postgres.password,
                          "bindir": str(postgres.bindir)}, "reader_password": "pw", "moto": {"port": 1234, "pid": 1}}
    env = lifecycle.settings(state)
    assert parse_url(env["TOTESYS_SOURCE_URL"])["user"] == admin.READER_ROLE
    assert parse_url(env["TOTESYS_SOURCE_ADMIN_URL"])["user"] == "postgres"
    assert parse_url(env["TOTESYS_WAREHOUSE_URL"])["database"] == lifecycle.WAREHOUSE_DB
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1234"
    assert (env["TOTESYS_INGEST_BUCKET"], env["TOTESYS_PROCESSED_BUCKET"]) == lifecycle.LOCAL_BUCKETS


def test_read_env_file_reads_shell_assignments(tmp_path):
    path = tmp_path / "env"
    path.write_text("# written by up\n\nA=1\nURL=postgresql://u:p=q@h:1/d\n  B = two \n")
    assert lifecycle.read_env_file(path) == {"A": "1", "URL": "postgresql://u:p=q@h:1/d", "B": "two"}


def test_up_recreates_a_lost_cluster_in_a_private_folder_and_keeps_a_running_moto(tmp_path, moto_server):
    """tmp_path is 0700: as root, the server's user cannot reach it, so the data goes elsewhere.
    A cluster whose data vanished is made anew, and the moto server `up` recorded stays known."""
    home = tmp_path / ".local"
    home.mkdir()
    (home / "services.json").write_text(json.dumps({
        "postgres": {"data_dir": str(tmp_path / "gone"), "port": 9, "password": "x", "bindir": "/nowhere"},
        "reader_password": "x", "moto": {"port": moto_server.port, "pid": moto_server.pid}}))
    cluster = None
    try:
        env = lifecycle.up(home)
        state = json.loads((home / "services.json").read_text())
        cluster = lifecycle._cluster_from(state)
        assert state["moto"] == {"port": moto_server.port, "pid": moto_server.pid}
        assert env["AWS_ENDPOINT_URL"] == moto_server.endpoint
        assert cluster.is_running()
        owner = pwd.getpwuid(cluster.data_dir.stat().st_uid).pw_name
        if os.geteuid() == 0:
            assert owner == servers.RUN_AS_USER and not cluster.data_dir.is_relative_to(tmp_path)
        else:
            assert cluster.data_dir.is_relative_to(home)
        conn = pg8000.native.Connection(**parse_url(env["TOTESYS_SOURCE_URL"]))
        assert conn.run("SELECT current_database(), current_user") == [[lifecycle.SOURCE_DB, admin.READER_ROLE]]
        conn.close()
        fx_api = FxApiProcess(**state["fx_api"])
        assert fx_api.is_running() and env["TOTESYS_FX_API_URL"] == fx_api.url
        assert urllib3.request("GET", f"{fx_api.url}/2024-01-08..2024-01-08?base=GBP&symbols=EUR").status == 200
    finally:
        if cluster is not None:
            cluster.destroy()
        fx = json.loads((home / "services.json").read_text()).get("fx_api")
        if fx:
            FxApiProcess(**fx).stop()
    assert not cluster.data_dir.exists() and moto_server.is_running()
    assert not FxApiProcess(**fx).is_running()
