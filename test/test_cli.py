"""`totesys-etl up / down / seed / simulate` as a user runs them: the installed command, in a subprocess.

`up` keeps its state under `.local/` in the current directory, so each test runs the command with
`cwd=tmp_path`: a fresh clone's view, and pytest's 0700 temporary folder is the case where the
PostgreSQL user cannot reach `.local/` and the data must go to a folder of its own.
"""
from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess  # nosec B404
import sys
from pathlib import Path

import boto3
import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.local.services.fx_api import FxApiProcess
from totesys_etl.local.services import admin, lifecycle, servers

COMMAND = str(Path(sys.executable).with_name("totesys-etl"))
SPEC_VARIABLES = {"TOTESYS_SOURCE_URL", "TOTESYS_SOURCE_ADMIN_URL", "TOTESYS_WAREHOUSE_URL", "TOTESYS_INGEST_BUCKET",
                  "TOTESYS_PROCESSED_BUCKET", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                  "AWS_SECRET_ACCESS_KEY", "TOTESYS_FX_API_URL", "TOTESYS_LANDING_BUCKET"}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the command with no TOTESYS_/AWS_ settings but those given, as a fresh shell would."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "AWS_"))}
    return subprocess.run([COMMAND, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)  # nosec B603


def connect(url: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(**parse_url(url))


def reachable(url: str) -> bool:
    """True if the server answers; False only if it refuses the connection (stopped). Any other
    error (a wrong password, a missing database) is raised: it proves nothing about `down`."""
    try:
        connect(url).close()
        return True
    except pg8000.native.InterfaceError as e:
        if isinstance(e.__cause__, ConnectionRefusedError):
            return False
        raise


def make_clone(folder: Path) -> Path:
    """`folder` as a clone looks to the command: this project's pyproject.toml at its root."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "totesys-etl"\n')
    return folder


@pytest.fixture
def clone(tmp_path):
    """A clone's folder whose `.local/` services are stopped and deleted afterwards."""
    yield make_clone(tmp_path)
    cli(tmp_path, "down")
    state_path = tmp_path / ".local" / "services.json"
    if state_path.exists():
        pg = json.loads(state_path.read_text())["postgres"]
        servers.Postgres(Path(pg["data_dir"]), pg["port"], pg["password"], Path(pg["bindir"])).destroy()
        assert not Path(pg["data_dir"]).exists()


def test_up_is_idempotent_and_down_stops_only_what_up_started(clone, postgres, moto_server):
    first = cli(clone, "up")
    assert first.returncode == 0, first.stderr
    env_path = clone / ".local" / "env"
    env = lifecycle.read_env_file(env_path)
    assert set(env) == SPEC_VARIABLES
    assert oct(env_path.stat().st_mode & 0o777) == "0o600"
    for url in (env["TOTESYS_SOURCE_URL"], env["TOTESYS_SOURCE_ADMIN_URL"], env["TOTESYS_WAREHOUSE_URL"]):
        assert parse_url(url)["password"] not in first.stdout  # printed settings hide passwords
    state = json.loads((clone / ".local" / "services.json").read_text())
    data_dir = Path(state["postgres"]["data_dir"])
    assert pwd.getpwuid(data_dir.stat().st_uid).pw_name == (servers.RUN_AS_USER if os.geteuid() == 0
                                                            else pwd.getpwuid(os.geteuid()).pw_name)
    if os.geteuid() == 0:  # tmp_path is 0700 root: the server's user cannot reach it
        assert not data_dir.is_relative_to(clone) and data_dir.parent.name.startswith("totesys-etl-pg-")

    # The source URL is the read-only role; the admin URL may write.
    reader = connect(env["TOTESYS_SOURCE_URL"])
    try:
        assert reader.run("SELECT current_user") == [[admin.READER_ROLE]]
        with pytest.raises(pg8000.native.DatabaseError) as refused:
            reader.run("CREATE TABLE t (x int)")
        assert refused.value.args[0]["C"] == "42501"
    finally:
        reader.close()
    assert reachable(env["TOTESYS_WAREHOUSE_URL"])

    # The buckets exist, and the local S3 API honours create-only writes (contract §4).
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {env["TOTESYS_INGEST_BUCKET"], env["TOTESYS_PROCESSED_BUCKET"]} <= names
    bucket = env["TOTESYS_INGEST_BUCKET"]
    s3.put_object(Bucket=bucket, Key="a/b", Body=b"1", IfNoneMatch="*")
    with pytest.raises(s3.exceptions.ClientError) as exists:
        s3.put_object(Bucket=bucket, Key="a/b", Body=b"2", IfNoneMatch="*")
    assert exists.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
    assert s3.get_object(Bucket=bucket, Key="a/b")["Body"].read() == b"1"

    # A second `up` changes nothing: same servers, same settings, same objects.
    again = cli(clone, "up")
    assert again.returncode == 0, again.stderr
    assert lifecycle.read_env_file(env_path) == env
    assert json.loads((clone / ".local" / "services.json").read_text()) == state
    assert s3.get_object(Bucket=bucket, Key="a/b")["Body"].read() == b"1"

    # seed and simulate find the services through .local/env alone.
    seeded = cli(clone, "seed", "--orders", "120", "--seed", "3")
    assert seeded.returncode == 0, seeded.stderr
    assert "sales_order 120" in seeded.stdout
    simulated = cli(clone, "simulate", "--changes", "12", "--seed", "1")
    assert simulated.returncode == 0, simulated.stderr
    assert simulated.stdout.startswith("simulated 12 changed rows: ")

    moto_pid = state["moto"]["pid"]
    down = cli(clone, "down")
    assert down.returncode == 0, down.stderr
    assert "PostgreSQL" in down.stdout and "moto" in down.stdout and "FX rates stand-in" in down.stdout
    assert not FxApiProcess(**state["fx_api"]).is_running()
    assert not servers.MotoServer(state["moto"]["port"], moto_pid).is_running()
    assert not reachable(env["TOTESYS_SOURCE_ADMIN_URL"])
    # what others started keeps running
    assert moto_server.is_running() and postgres.is_running()

    twice = cli(clone, "down")
    assert twice.returncode == 0 and "nothing was running" in twice.stdout

    # `up` after `down` brings back the same data.
    back = cli(clone, "up")
    assert back.returncode == 0, back.stderr
    env = lifecycle.read_env_file(env_path)
    assert connect(env["TOTESYS_SOURCE_URL"]).run("SELECT count(*) > 120 FROM sales_order") == [[True]]


def test_seed_and_simulate_use_the_environment_and_ignore_local_env(tmp_path, source, run_sql, closed_port):
    (tmp_path / ".local").mkdir()
    nowhere = f"postgresql://x:y@127.0.0.1:{closed_port}/nowhere"
    (tmp_path / ".local" / "env").write_text(f"TOTESYS_SOURCE_ADMIN_URL={nowhere}\n")
    settings = {"TOTESYS_SOURCE_URL": source.reader_url, "TOTESYS_SOURCE_ADMIN_URL": source.admin_url}
    seeded = cli(tmp_path, "seed", "--orders", "40", **settings)
    assert seeded.returncode == 0, seeded.stderr
    assert run_sql(source.reader_url, "SELECT count(*) FROM sales_order") == [[40]]
    simulated = cli(tmp_path, "simulate", "--changes", "9", **settings)
    assert simulated.returncode == 0, simulated.stderr
    assert simulated.stdout.startswith("simulated 9 changed rows: ")


def test_seed_without_settings_is_a_usage_error(tmp_path):
    result = cli(tmp_path, "seed")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "TOTESYS_SOURCE_ADMIN_URL" in result.stderr


def test_seed_through_the_read_only_role_fails_in_one_line_without_the_password(tmp_path, source):
    result = cli(tmp_path, "seed", "--orders", "10", TOTESYS_SOURCE_URL=source.reader_url)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "seed failed" in result.stderr
    assert parse_url(source.reader_url)["password"] not in result.stderr + result.stdout


def test_an_unreachable_source_names_itself_not_its_credentials(tmp_path, closed_port):
    result = cli(tmp_path, "simulate",
                 TOTESYS_SOURCE_ADMIN_URL=f"postgresql://admin:s3cret-pw@127.0.0.1:{closed_port}/totesys")
    assert result.returncode == 1
    assert "source" in result.stderr and "s3cret-pw" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_version_and_the_everyday_sequence_in_help(tmp_path):
    version = cli(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("totesys-etl ") and \
        version.stdout.split()[1][0].isdigit()
    helped = cli(tmp_path, "--help")
    assert helped.returncode == 0
    everyday = helped.stdout[helped.stdout.index("everyday use:"):]
    everyday_commands = [line.split()[1] for line in everyday.splitlines()[1:7]]
    assert everyday_commands == ["up", "seed", "tick", "reconcile", "status", "report"]


def test_a_machine_without_postgresql_is_told_what_to_install(tmp_path, monkeypatch, capsys):
    """The likeliest first failure on a new machine reaches the user as one line saying what to do."""
    from totesys_etl import cli as cli_module

    monkeypatch.chdir(make_clone(tmp_path))
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)     # no pg_config on PATH
    monkeypatch.setattr(servers.glob, "glob", lambda pattern: [])        # no /usr/lib/postgresql/*/bin
    assert cli_module.main(["up"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("totesys-etl up: no PostgreSQL server binaries found") and "install PostgreSQL" in err
    assert "pg_config" in err  # what the lookup finds on PATH (servers.postgres_bindir)
    assert len(err.splitlines()) == 1


def test_logs_with_nothing_kept_names_every_command_that_keeps_logs(tmp_path, monkeypatch, capsys):
    """The hint lists exactly the commands whose lines main() keeps (KEEPS_LOGS), not a copy of them."""
    from totesys_etl import cli as cli_module

    monkeypatch.delenv("TOTESYS_HOME", raising=False)
    monkeypatch.chdir(make_clone(tmp_path))
    assert cli_module.main(["logs"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("no log lines kept under "), err
    hint = err[err.rindex("(") + 1:err.index(" keep theirs there)")]
    assert set(hint.replace(" and ", ", ").split(", ")) == cli_module.KEEPS_LOGS


def test_run_goes_on_after_a_failed_tick_and_fails_at_the_end(tmp_path, closed_port):
    nowhere = f"postgresql://reader:pw@127.0.0.1:{closed_port}/totesys"
    done = cli(tmp_path, "run", "--ticks", "2", "--interval", "0", TOTESYS_SOURCE_URL=nowhere,
               TOTESYS_WAREHOUSE_URL=nowhere, TOTESYS_INGEST_BUCKET="b1", TOTESYS_PROCESSED_BUCKET="b2",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed_port}", AWS_DEFAULT_REGION="eu-west-2",
               AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert [line.split()[0] for line in lines[:2]] == ["[1/2]", "[2/2]"] and all("tick failed" in x for x in lines[:2])
    assert lines[-1] == "2 tick(s), 2 failed" and "pw@" not in done.stdout + done.stderr


def test_commands_find_the_clone_s_local_services_from_any_folder_inside_it(tmp_path, closed_port):
    """From a subfolder, `.local/env` of the clone's root is read (not a second setup); TOTESYS_HOME
    names the clone from anywhere."""
    clone = make_clone(tmp_path / "clone")
    (clone / ".local").mkdir(parents=True)
    url = f"postgresql://reader:pw@127.0.0.1:{closed_port}/totesys"
    (clone / ".local" / "env").write_text(
        f"TOTESYS_SOURCE_URL={url}\nTOTESYS_WAREHOUSE_URL={url}\nTOTESYS_INGEST_BUCKET=b1\n"
        f"TOTESYS_PROCESSED_BUCKET=b2\n")
    deep = clone / "src" / "deeper"
    deep.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for where, env in ((deep, {}), (elsewhere, {"TOTESYS_HOME": str(clone)})):
        result = cli(where, "reconcile", **env)
        assert result.returncode == 1 and f"127.0.0.1:{closed_port}" in result.stderr, result.stderr
    lost = cli(elsewhere, "reconcile")
    assert lost.returncode == 2 and "not set" in lost.stderr


def test_progress_shows_with_v_or_on_a_terminal_and_is_quiet_otherwise(tmp_path, source):
    quiet = cli(tmp_path, "seed", "--orders", "20", TOTESYS_SOURCE_ADMIN_URL=source.admin_url)
    assert quiet.returncode == 0 and quiet.stderr == ""
    verbose = cli(tmp_path, "-v", "seed", "--orders", "20", TOTESYS_SOURCE_ADMIN_URL=source.admin_url)
    lines = [line for line in verbose.stderr.splitlines() if "table generated" in line]
    assert verbose.returncode == 0 and len(lines) == 4 and "table=sales_order" in lines[0] and "rows=20" in lines[0]
    assert not any(line.lstrip().startswith("{") for line in verbose.stderr.splitlines())  # text, not JSON
    # On a terminal the same lines show without -v.
    import pty

    primary, secondary = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "AWS_"))}
    done = subprocess.run([COMMAND, "seed", "--orders", "20"], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=secondary, env={**clean, "TOTESYS_SOURCE_ADMIN_URL": source.admin_url},
                          timeout=300)  # nosec B603
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert done.returncode == 0 and shown.count(b"table generated") == 4


def test_outside_any_clone_the_command_says_so_and_makes_no_local_folder(tmp_path):
    """contract §6: exit 2 with one line saying so; never advice that would start a second stack here."""
    for command in ("up", "down", "reset", "demo", "logs", "tick", "status", "reconcile", "seed"):
        result = cli(tmp_path, command)
        assert result.returncode == 2, (command, result.stderr)
        err = result.stderr.strip()
        assert len(err.splitlines()) == 1 and "no totesys-etl clone" in err and "TOTESYS_HOME" in err, err
        assert "`totesys-etl up`" not in err, err
    assert not (tmp_path / ".local").exists()


def test_one_own_setting_names_what_is_missing_instead_of_reading_local_env(tmp_path, closed_port):
    """TOTESYS_SOURCE_URL alone stops `.local/env` being read (contract §5): the message says so and
    names the settings still missing, in a clone whose services are up as much as outside one."""
    clone = make_clone(tmp_path)
    (clone / ".local").mkdir()
    (clone / ".local" / "env").write_text("TOTESYS_INGEST_BUCKET=b1\nTOTESYS_PROCESSED_BUCKET=b2\n")
    result = cli(clone, "tick", TOTESYS_SOURCE_URL=f"postgresql://r:pw@127.0.0.1:{closed_port}/totesys")
    err = result.stderr.strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1, err
    assert "TOTESYS_INGEST_BUCKET, TOTESYS_PROCESSED_BUCKET not set" in err
    assert "TOTESYS_SOURCE_URL is set, so .local/env is not read" in err and "`totesys-etl up`" not in err


def test_simulate_counts_orders_not_rows(tmp_path, source):
    """Issue 35: `new_sales_orders 111` was printed for 37 orders (each writes an order, a transaction
    and a payment): the count is of events, the rows beside it."""
    from totesys_etl.local.source.seed import seed

    seed(source.admin_url, orders=30, seed=1)
    before = connect(source.admin_url).run("SELECT count(*) FROM sales_order")[0][0]
    done = cli(tmp_path, "simulate", "--changes", "90", "--seed", "5", TOTESYS_SOURCE_ADMIN_URL=source.admin_url,
               TOTESYS_SOURCE_URL=source.reader_url)
    assert done.returncode == 0, done.stderr
    new_orders = connect(source.admin_url).run("SELECT count(*) FROM sales_order")[0][0] - before
    part = next(p for p in done.stdout.split(": ", 1)[1].split(", ") if p.startswith("new_sales_orders "))
    assert part == f"new_sales_orders {new_orders} ({3 * new_orders} rows)" and new_orders > 0


def test_report_out_names_a_file_in_a_folder_that_exists(tmp_path):
    """Issue 35: a folder gave "unexpected IsADirectoryError"; a missing folder was made, anywhere."""
    settings = {"TOTESYS_WAREHOUSE_URL": "postgresql://u:p@127.0.0.1:1/dw"}
    folder = cli(tmp_path, "report", "--out", str(tmp_path), **settings)
    assert folder.returncode == 2 and f"--out {tmp_path} is a folder" in folder.stderr
    missing = tmp_path / "no" / "such"
    typo = cli(tmp_path, "report", "--out", str(missing / "r.html"), **settings)
    assert typo.returncode == 2 and f"the folder {missing} does not exist" in typo.stderr
    assert not (tmp_path / "no").exists()
    for result in (folder, typo):
        assert len(result.stderr.strip().splitlines()) == 1


def test_run_takes_only_a_positive_number_of_ticks(tmp_path):
    for ticks in ("-1", "0", "x"):
        refused = cli(tmp_path, "run", "--ticks", ticks)
        assert refused.returncode == 2 and "--ticks: must be a whole number >= 1" in refused.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """Issue 35: `totesys-etl logs | head` printed BrokenPipeError."""
    clone = make_clone(tmp_path)
    (clone / ".local" / "logs").mkdir(parents=True)
    line = json.dumps({"time": "2026-01-01T00:00:00.000+00:00", "level": "INFO", "stage": "load",
                       "run_id": "20260101T000000000000Z", "message": "loaded " + "x" * 200})
    (clone / ".local" / "logs" / "2026-01-01.jsonl").write_text((line + "\n") * 20_000)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "AWS_"))}
    reader = subprocess.Popen([COMMAND, "logs"], cwd=clone, env=clean, stdout=subprocess.PIPE,  # nosec B603
                              stderr=subprocess.PIPE)
    assert reader.stdout.readline().startswith(b"2026-01-01T00:00:00.000+00:00")
    reader.stdout.close()  # what `head -1` does after its line
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=60) in (0, 1) and "Error" not in err and "Traceback" not in err, err


def test_an_idle_tick_on_a_terminal_prints_no_line_per_file_already_taken(tmp_path, pipeline_env, landing_bucket):
    """Issue 35: every idle tick printed a line for each courier file taken long ago (now DEBUG)."""
    from totesys_etl.local.source.deliveries import simulate_deliveries
    from totesys_etl.local.source.seed import seed

    seed(pipeline_env["TOTESYS_SOURCE_ADMIN_URL"], orders=20, seed=1)
    simulate_deliveries(pipeline_env["TOTESYS_SOURCE_ADMIN_URL"], landing_bucket, 20, seed=1)
    settings = {**pipeline_env, "TOTESYS_LANDING_BUCKET": landing_bucket}
    first = cli(tmp_path, "-v", "tick", **settings)
    assert first.returncode == 0 and "courier" in first.stderr, first.stderr
    idle = cli(tmp_path, "-v", "tick", **settings)
    assert idle.returncode == 0, idle.stderr
    assert "already taken" not in idle.stderr and idle.stderr.count("\n") < 40, idle.stderr


def test_up_takes_the_previous_ports_when_free_and_says_when_one_was_taken(clone):
    assert cli(clone, "up").returncode == 0
    env = lifecycle.read_env_file(clone / ".local" / "env")
    assert cli(clone, "down").returncode == 0
    fx_port = int(env["TOTESYS_FX_API_URL"].rsplit(":", 1)[1])
    with socket.socket() as squatter:  # something else took the FX stand-in's port meanwhile
        squatter.bind(("127.0.0.1", fx_port))
        squatter.listen()
        back = cli(clone, "up")
    assert back.returncode == 0, back.stderr
    again = lifecycle.read_env_file(clone / ".local" / "env")
    assert again["TOTESYS_FX_API_URL"] != env["TOTESYS_FX_API_URL"]
    assert {k: v for k, v in again.items() if k != "TOTESYS_FX_API_URL"} == \
        {k: v for k, v in env.items() if k != "TOTESYS_FX_API_URL"}  # the others kept theirs
    assert "a shell that read .local/env before must read it again" in back.stdout
