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

import pytest

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

    # A kill -9 of the S3 server with courier files just dropped: their notifications die with it,
    # the objects do not, and the tick's sweep takes the files all the same.
    ok(cli(home, "simulate", "--changes", "40", "--seed", "3"))
    ok(cli(home, "simulate", "--deliveries", "60", "--seed", "3"))
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
