"""Day two on one machine (issue 35): the local services stop and start, and nothing is lost.

Every step is the installed command in a process of its own, on real PostgreSQL and the real
local S3 server, as a user at a shell runs them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess  # nosec B404
import sys
import time
from pathlib import Path

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.lake import RUN_ID
from totesys_etl.local.services import lifecycle, servers

pytestmark = pytest.mark.slow
COMMAND = str(Path(sys.executable).with_name("totesys-etl"))


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The command in `home`'s clone (TOTESYS_HOME), with only the settings given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "AWS_"))}
    return subprocess.run([COMMAND, *args], cwd=home, env={**clean, "TOTESYS_HOME": str(home), **env},
                          capture_output=True, text=True, timeout=600)  # nosec B603


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ingested_rows(tick_output: str) -> int:
    """`tick 2026...: ingest 1,234 rows 0.50s, ...` -> 1234."""
    return int(tick_output.split("ingest ", 1)[1].split(" rows", 1)[0].replace(",", ""))


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    cli(tmp_path, "down")
    state = tmp_path / ".local" / "services.json"
    if state.exists():
        pg = json.loads(state.read_text())["postgres"]
        servers.Postgres(Path(pg["data_dir"]), pg["port"], pg["password"], Path(pg["bindir"])).destroy()


def test_the_lake_survives_down_up_and_a_killed_s3_server_and_old_settings_still_work(home):
    ok(cli(home, "up"))
    shell = lifecycle.read_env_file(home / ".local" / "env")  # what `set -a; . .local/env` gave a shell
    ok(cli(home, "seed", "--orders", "200", "--seed", "1"))
    first = ok(cli(home, "tick"))
    assert ingested_rows(first) > 1000

    ok(cli(home, "down"))
    ok(cli(home, "up"))
    assert lifecycle.read_env_file(home / ".local" / "env") == shell  # the same ports again
    idle = ok(cli(home, "tick"))
    assert ingested_rows(idle) == 0, idle  # the watermarks and runs were kept: nothing is taken twice
    ok(cli(home, "simulate", "--changes", "60", "--seed", "2"))
    ok(cli(home, "simulate", "--deliveries", "100", "--seed", "2"))
    ok(cli(home, "tick"))
    assert "warehouse equals source" in ok(cli(home, "reconcile"))

    # A kill -9 of the S3 server with courier files just dropped and a run just ingested (the
    # processor not run yet): their notifications die with it, the objects do not, and the tick's
    # sweeps take the files and finish the run all the same.
    ok(cli(home, "simulate", "--changes", "40", "--seed", "3"))
    ok(cli(home, "simulate", "--deliveries", "60", "--seed", "3"))
    ingest_alone = subprocess.run([sys.executable, "-c", "from totesys_etl.ingest.handler import lambda_handler as h; "
                                   "print(h({}, None)['run_id'])"], env={**os.environ, **shell},
                                  capture_output=True, text=True, timeout=300)  # nosec B603
    orphan = ingest_alone.stdout.strip()
    assert RUN_ID.fullmatch(orphan), ingest_alone.stderr
    moto = json.loads((home / ".local" / "services.json").read_text())["moto"]
    os.kill(moto["pid"], signal.SIGKILL)
    for _ in range(100):
        if not servers.MotoServer(**moto).is_running():
            break
        time.sleep(0.05)
    ok(cli(home, "up"))
    # The shell that read .local/env before both restarts works as it is (its settings, not .local/env).
    ok(cli(home, "tick", **shell))
    assert "warehouse equals source" in ok(cli(home, "reconcile", **shell))
    assert orphan in ok(cli(home, "logs", "--stage", "load", "--run", orphan))  # loaded by the sweep


def test_seed_over_a_loaded_pipeline_refuses_and_reset_then_seed_then_tick_reconciles(home):
    ok(cli(home, "up"))
    ok(cli(home, "seed", "--orders", "150", "--seed", "1"))
    first = ok(cli(home, "tick"))

    refused = cli(home, "seed", "--orders", "100", "--seed", "2")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "`totesys-etl reset`" in refused.stderr
    shell = lifecycle.read_env_file(home / ".local" / "env")

    reset = ok(cli(home, "reset"))
    assert "warehouse" in reset and shell["TOTESYS_INGEST_BUCKET"] in reset
    source = pg8000.native.Connection(**parse_url(shell["TOTESYS_SOURCE_URL"]))
    try:
        assert source.run("SELECT count(*) FROM sales_order") == [[150]]  # reset keeps the source
    finally:
        source.close()
    ok(cli(home, "seed", "--orders", "100", "--seed", "2"))
    again = ok(cli(home, "tick"))
    assert ingested_rows(again) > 0 and again.split(":")[0] != first.split(":")[0]
    assert "warehouse equals source" in ok(cli(home, "reconcile"))

    # The tick's JSON lines were kept: `logs` filters them by stage, run and time.
    run_id = again.split(":")[0].split()[1]
    loads = ok(cli(home, "logs", "--stage", "load", "--json"))
    lines = [json.loads(line) for line in loads.splitlines()]
    assert lines and all(line["stage"] == "load" for line in lines)
    of_run = [json.loads(line) for line in ok(cli(home, "logs", "--run", run_id, "--json")).splitlines()]
    assert of_run and {line["run_id"] for line in of_run} == {run_id} and "ingest" in {x["stage"] for x in of_run}
    readable = ok(cli(home, "logs", "--run", run_id, "--since", "10"))
    assert run_id in readable and not readable.lstrip().startswith("{")
    assert ok(cli(home, "logs", "--since", "0")) == ""

    # The local PostgreSQL stopped (the warehouse with it): status still shows the lake, names the
    # warehouse as unreachable and exits 0.
    pg = json.loads((home / ".local" / "services.json").read_text())["postgres"]
    servers.Postgres(Path(pg["data_dir"]), pg["port"], pg["password"], Path(pg["bindir"])).stop()
    shown = cli(home, "status")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("warehouse unreachable: warehouse database 'warehouse'"), shown.stdout
    assert RUN_ID.search(next(line for line in lines if line.startswith("ingest"))), shown.stdout  # the lake's side
