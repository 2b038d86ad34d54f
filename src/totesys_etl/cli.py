"""`totesys-etl`: a thin face over the local runtime and the pipeline's checks.

Exit codes: 0 success, 1 the job failed (or reconcile found a difference), 2 bad usage or
configuration, each with a one-line reason on stderr. Only this module reads `.local/env`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from totesys_etl import logs
from totesys_etl.errors import ConfigurationError, EtlError, describe

HOME_VARIABLE = "TOTESYS_HOME"
#: Long work whose progress a terminal shows without -v.
PROGRESS_COMMANDS = {"seed", "tick", "run", "demo"}
_PROJECT_MARK = 'name = "totesys-etl"'


def local_home() -> Path:
    """The `.local/` folder of this clone, found from any folder inside it.

    `TOTESYS_HOME` names the clone's folder outright; otherwise the nearest folder at or above the
    working directory whose `pyproject.toml` is this project's; otherwise the working directory
    (a folder outside any clone gets its own `.local/`).
    """
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser() / ".local"
    here = Path.cwd()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and _PROJECT_MARK in project.read_text(errors="replace"):
            return folder / ".local"
    return here / ".local"


def load_local_env(home: Path | None = None) -> bool:
    """Fill unset contract §5 variables from `.local/env`, unless the caller gave its own setup.

    If `TOTESYS_SOURCE_URL` or `AWS_ENDPOINT_URL` is set, `.local/env` is not read at all, so two
    setups never mix. True when the file was read.
    """
    if os.environ.get("TOTESYS_SOURCE_URL") or os.environ.get("AWS_ENDPOINT_URL"):
        return False
    path = (home or local_home()) / "env"
    if not path.exists():
        return False
    from totesys_etl.local.services.lifecycle import read_env_file

    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)
    return True


def _require(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ConfigurationError(f"{', '.join(missing)} not set; run `totesys-etl up` or set them (contract §5)")


def _admin_url() -> str:
    """The source URL `seed` and `simulate` write through (contract §5: the admin one, else the source's)."""
    load_local_env()
    url = os.environ.get("TOTESYS_SOURCE_ADMIN_URL") or os.environ.get("TOTESYS_SOURCE_URL")
    if not url:
        _require("TOTESYS_SOURCE_ADMIN_URL")
    return url


def _up(args) -> int:
    from totesys_etl.local.services.lifecycle import up

    env = up(local_home())
    print("local services are up; settings written to .local/env:")
    for key, value in env.items():
        print(f"  {key}={_redact(value)}")
    print("use them in a shell with: set -a; . .local/env; set +a")
    return 0


def _redact(value: str) -> str:
    """A URL with its password shown as *** (printed settings are for reading, .local/env for use)."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.password:
        return value.replace(f":{parts.password}@", ":***@")
    return value


def _down(args) -> int:
    from totesys_etl.local.services.lifecycle import down

    stopped = down(local_home())
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _seed(args) -> int:
    from totesys_etl.local.source.seed import seed

    counts = seed(_admin_url(), orders=args.orders, seed=args.seed, awkward=args.awkward)
    print("seeded: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return 0


def _simulate(args) -> int:
    from totesys_etl.local.source.simulate import simulate

    if args.deliveries is not None:
        _simulate_deliveries(args)
        if args.changes is None:
            return 0
    counts = simulate(_admin_url(), changes=100 if args.changes is None else args.changes, seed=args.seed)
    print("simulated: " + ", ".join(f"{k} {n:,}" for k, n in counts.items()))
    return 0


def _simulate_deliveries(args) -> None:
    """contract §6 `simulate --deliveries N`: courier files in the landing bucket (§9)."""
    from totesys_etl.local.source.deliveries import simulate_deliveries

    admin_url = _admin_url()
    _require("TOTESYS_LANDING_BUCKET")
    dropped = simulate_deliveries(admin_url, os.environ["TOTESYS_LANDING_BUCKET"], args.deliveries, seed=args.seed)
    print("dropped courier files: " + ", ".join(f"{k} {n:,}" for k, n in dropped.summary().items()))


def _pipeline_env() -> None:
    load_local_env()
    _require("TOTESYS_INGEST_BUCKET", "TOTESYS_PROCESSED_BUCKET")


def _tick(args) -> int:
    from totesys_etl.local.drive.tick import tick

    _pipeline_env()
    report = tick()
    print(report.summary())
    return 0


def _run(args) -> int:
    from totesys_etl.local.drive.tick import run

    _pipeline_env()
    failed = run(interval=args.interval, ticks=args.ticks, out=sys.stdout)
    return 1 if failed else 0


def _reconcile(args) -> int:
    from totesys_etl.reconcile import reconcile

    _pipeline_env()
    report = reconcile()
    print(report.table())
    return 0 if report.ok else 1


def _quarantine(args) -> int:
    """What is held back (contract §6): one line per quarantined file, manifest or group of rows."""
    from totesys_etl.quarantine import listed

    _pipeline_env()
    held = listed(os.environ["TOTESYS_PROCESSED_BUCKET"], args.run)
    for entry in held:
        print(entry.line())
    if not held:
        print(f"nothing is held back{' in run ' + args.run if args.run else ''}")
    return 0


def _status(args) -> int:
    import json

    from totesys_etl.status import status

    _pipeline_env()
    found = status()
    print(json.dumps(found.to_json(), indent=1) if args.json else found.table())
    return 0


def _report(args) -> int:
    from totesys_etl.report import write_report, warehouse_from_env

    load_local_env()
    print(write_report(warehouse_from_env(), args.out or local_home() / "report.html"))
    return 0


def _demo(args) -> int:
    from totesys_etl.local.drive.demo import demo

    return demo(local_home(), orders=args.orders, out=sys.stdout)


EVERYDAY = """everyday use:
  totesys-etl up          start local PostgreSQL and moto's server (settings in .local/env)
  totesys-etl seed        fill the source with reproducible data
  totesys-etl tick        ingest, process and load once, as AWS drives the handlers
  totesys-etl reconcile   compare the warehouse with the source
  totesys-etl status      where each stage is, what is pending and held back
  totesys-etl report      write the warehouse's report page

exit codes: 0 success, 1 the job failed or reconcile found a difference, 2 bad usage or configuration"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("totesys-etl")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="totesys-etl", description="Move the totesys OLTP database into a "
                                     "star-schema warehouse through an S3 lake, exactly once.",
                                     epilog=EVERYDAY, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="the stages' log lines as readable text on stderr (on a terminal they show anyway)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start local PostgreSQL and moto's server").set_defaults(func=_up)
    commands.add_parser("down", help="stop what `up` started").set_defaults(func=_down)
    p = commands.add_parser("seed", help="recreate the 11 source tables with reproducible data")
    p.add_argument("--orders", type=int, default=10_000, help="rows in sales_order (default 10,000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same rows)")
    p.add_argument("--awkward", action="store_true", help="add extreme numbers and dates (for tests)")
    p.set_defaults(func=_seed)
    p = commands.add_parser("simulate", help="OLTP activity: new and updated rows")
    p.add_argument("--changes", type=int, default=None, help="number of changes (default 100, or none with "
                   "--deliveries alone)")
    p.add_argument("--deliveries", type=int, default=None, metavar="N",
                   help="drop courier files with N delivery events into the landing bucket (contract §9)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a new one)")
    p.set_defaults(func=_simulate)
    commands.add_parser("tick", help="one cycle: ingest, process, load, as AWS drives them").set_defaults(func=_tick)
    p = commands.add_parser("run", help="tick on a schedule")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between tick starts")
    p.add_argument("--ticks", type=int, default=None, help="stop after N ticks (default: run until stopped)")
    p.set_defaults(func=_run)
    commands.add_parser("reconcile", help="compare warehouse and source; exit 1 on any difference"
                        ).set_defaults(func=_reconcile)
    p = commands.add_parser("quarantine", help="list what is held back, per run, with reasons")
    p.add_argument("--run", default=None, metavar="RUN_ID", help="only this run")
    p.set_defaults(func=_quarantine)
    p = commands.add_parser("status", help="where each stage is: newest run, mark, pending runs; what is held "
                            "back; the warehouse's rows and lag")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.set_defaults(func=_status)
    p = commands.add_parser("report", help="write a self-contained HTML report from the warehouse's views")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="where to write it (default .local/report.html)")
    p.set_defaults(func=_report)
    p = commands.add_parser("demo", help="up, seed, tick, simulate, tick, reconcile, summary")
    p.add_argument("--orders", type=int, default=10_000)
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The command prints its own one-line results. Progress (the stages' INFO lines, as readable
    # text) goes to stderr with -v or when stderr is a terminal; the JSON lines (what CloudWatch
    # reads in AWS) when asked for with TOTESYS_LOG_LEVEL; otherwise nothing.
    if os.environ.get("TOTESYS_LOG_LEVEL"):
        logs.configure(os.environ["TOTESYS_LOG_LEVEL"])
    elif args.verbose or (args.command in PROGRESS_COMMANDS and sys.stderr.isatty()):
        logs.readable()
    else:
        logs.configure("CRITICAL")
    try:
        return args.func(args)
    except EtlError as e:
        print(f"totesys-etl {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except (BotoCoreError, ClientError) as e:
        print(f"totesys-etl {args.command}: the S3 API failed: {describe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    except Exception as e:  # a bug: one line naming it; the message is left out, it may hold a setting
        print(f"totesys-etl {args.command}: unexpected {type(e).__name__} (run with TOTESYS_LOG_LEVEL=INFO "
              f"for the handlers' logs)", file=sys.stderr)
        return 1
