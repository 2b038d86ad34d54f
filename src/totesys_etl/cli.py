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
#: Commands whose JSON log lines are kept under the clone's `.local/logs/` for `totesys-etl logs`.
KEEPS_LOGS = {"seed", "simulate", "tick", "run", "demo", "reset", "reconcile"}
_PROJECT_MARK = 'name = "totesys-etl"'


def find_home() -> Path | None:
    """The `.local/` folder of this clone, found from any folder inside it; None outside any clone.

    `TOTESYS_HOME` names the clone's folder outright; otherwise the nearest folder at or above the
    working directory whose `pyproject.toml` is this project's. A folder outside any clone has no
    `.local/`: no command makes one there (contract §6).
    """
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser() / ".local"
    here = Path.cwd()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and _PROJECT_MARK in project.read_text(errors="replace"):
            return folder / ".local"
    return None


OUTSIDE = (f"this folder is in no totesys-etl clone and {HOME_VARIABLE} is not set: run the command inside "
           f"the clone, or set {HOME_VARIABLE} to the clone's folder")


def local_home() -> Path:
    """The clone's `.local/` for the commands that need one (`up`, `down`, `reset`, `demo`, `logs`);
    exit 2 outside any clone rather than start a second, empty stack there."""
    home = find_home()
    if home is None:
        raise ConfigurationError(OUTSIDE)
    return home


#: Settings that, given in the environment, mean "my own setup": `.local/env` is then not read (§5).
OWN_SETUP = ("TOTESYS_SOURCE_URL", "AWS_ENDPOINT_URL")


def load_local_env(home: Path | None = None) -> bool:
    """Fill unset contract §5 variables from `.local/env`, unless the caller gave its own setup.

    If `TOTESYS_SOURCE_URL` or `AWS_ENDPOINT_URL` is set, `.local/env` is not read at all, so two
    setups never mix. True when the file was read.
    """
    if any(os.environ.get(name) for name in OWN_SETUP):
        return False
    home = home or find_home()
    path = home / "env" if home else None
    if path is None or not path.exists():
        return False
    from totesys_etl.local.services.lifecycle import read_env_file

    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)
    return True


def _require(*names: str) -> None:
    """Exit 2 naming the missing settings and the one step that would give them, for where we are."""
    missing = [n for n in names if not os.environ.get(n)]
    if not missing:
        return
    what = f"{', '.join(missing)} not set"
    own = [name for name in OWN_SETUP if os.environ.get(name)]
    home = find_home()
    if own:
        advice = (f"{' and '.join(own)} {'is' if len(own) == 1 else 'are'} set, so .local/env is not read "
                  f"(contract §5): set the rest too, or unset {' and '.join(own)} to use the clone's local services")
    elif home is None:
        advice = OUTSIDE + ", or set the contract §5 settings"
    elif (home / "env").exists():
        advice = f"{home / 'env'} lacks them: run `totesys-etl up` to write it again"
    else:
        advice = "run `totesys-etl up` (it writes them to .local/env), or set them (contract §5)"
    raise ConfigurationError(f"{what}; {advice}")


def _admin_url() -> str:
    """The source URL `seed` and `simulate` write through (contract §5: the admin one, else the source's)."""
    load_local_env()
    url = os.environ.get("TOTESYS_SOURCE_ADMIN_URL") or os.environ.get("TOTESYS_SOURCE_URL")
    if not url:
        _require("TOTESYS_SOURCE_ADMIN_URL")
    return url


def _up(args) -> int:
    from totesys_etl.local.services.lifecycle import read_env_file, up

    home = local_home()
    before = read_env_file(home / "env") if (home / "env").exists() else None
    env = up(home)
    print(f"local services are up; settings written to {home / 'env'}:")
    for key, value in env.items():
        print(f"  {key}={_redact(value)}")
    if before is not None and before != env:  # a port was taken meanwhile: old shells point elsewhere
        print("the settings changed since the last up: a shell that read .local/env before must read it again")
    print(f"use them in a shell with: set -a; . {home / 'env'}; set +a")
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
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running")
          + "; the data, the lake included, stays under .local/ (totesys-etl up brings it back)")
    return 0


def _seed(args) -> int:
    from totesys_etl.local.source.seed import seed

    admin_url = _admin_url()
    _refuse_over_a_loaded_pipeline()
    counts = seed(admin_url, orders=args.orders, seed=args.seed, awkward=args.awkward)
    print("seeded: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return 0


def _refuse_over_a_loaded_pipeline() -> None:
    """contract §6: `seed` refuses (exit 2, naming `reset`) while the lake or the warehouse holds runs.

    Only where the pipeline's settings are known (its buckets): `seed` given the admin URL alone
    fills a source no pipeline reads yet.
    """
    if not (os.environ.get("TOTESYS_INGEST_BUCKET") and os.environ.get("TOTESYS_PROCESSED_BUCKET")):
        return
    from totesys_etl.config import Settings
    from totesys_etl.local.drive.reset import pipeline_holds

    held = pipeline_holds(Settings.from_env())
    if held:
        raise ConfigurationError(f"the pipeline has already ingested from this source ({', '.join(held)}): a new seed "
                                 f"would leave reconcile out of step for good; run `totesys-etl reset` first (it "
                                 f"empties the warehouse and up's buckets, keeps the source)")


def _reset(args) -> int:
    """contract §6 `reset`: on `up`'s services only, whatever the shell's settings name."""
    from totesys_etl.local.drive.reset import reset
    from totesys_etl.local.services.lifecycle import up

    home = local_home()
    env = up(home)
    os.environ.update(env)  # the queues and buckets reset works on are up's, never the shell's
    print("emptied: " + ", ".join(reset(home, env)) + "; the source is kept (next: totesys-etl tick)")
    return 0


def _simulate(args) -> int:
    from totesys_etl.local.source.simulate import simulate

    if args.deliveries is not None:
        _simulate_deliveries(args)
        if args.changes is None:
            return 0
    counts = simulate(_admin_url(), changes=100 if args.changes is None else args.changes, seed=args.seed)
    print(_simulated(counts))
    return 0


def _simulated(counts: dict[str, int]) -> str:
    """`simulated 100 changed rows: new_sales_orders 37 (111 rows), ...`: events per kind, and the rows
    of the kinds that write several (a new sales order is an order, its transaction and its payment)."""
    from totesys_etl.local.source.simulate import KINDS

    per_event = {k.name: k.rows for k in KINDS}
    parts = [f"{kind} {rows // per_event[kind]:,}" + (f" ({rows:,} rows)" if per_event[kind] > 1 else "")
             for kind, rows in counts.items()]
    return f"simulated {sum(counts.values()):,} changed rows: " + ", ".join(parts)


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


def _logs(args) -> int:
    """contract §6 `logs`: the JSON lines local commands kept under `.local/logs/`, filtered."""
    import json
    from datetime import datetime, timedelta, timezone

    home = local_home()
    since = datetime.now(timezone.utc) - timedelta(minutes=args.since) if args.since is not None else None
    shown = 0
    for line in logs.kept_lines(home, since):
        if (args.stage and line.get("stage") != args.stage) or (args.run and line.get("run_id") != args.run):
            continue
        if args.json:
            print(json.dumps(line, ensure_ascii=False))
        else:
            fields = {k: v for k, v in line.items() if k not in ("time", "level", "message")}
            text = logs.readable_line(fields, str(line.get("message", "")), str(line.get("level", "?")))
            print(f"{line.get('time', '?')} {text}")
        shown += 1
    if not shown:
        keepers = sorted(KEEPS_LOGS)
        print(f"no log lines{' matching' if args.stage or args.run or since else ''} kept under "
              f"{home / logs.LOG_FOLDER} ({', '.join(keepers[:-1])} and {keepers[-1]} keep theirs there)",
              file=sys.stderr)
    return 0


def _report(args) -> int:
    from totesys_etl.report import write_report, warehouse_from_env

    load_local_env()
    out = _report_path(args.out) if args.out is not None else local_home() / "report.html"
    print(write_report(warehouse_from_env(), out))
    return 0


def _report_path(out: Path) -> Path:
    """`--out` names a file to write in a folder that exists: no folder is made on a typo's say-so."""
    if out.is_dir():
        raise ConfigurationError(f"--out {out} is a folder: give the file to write, e.g. {out / 'report.html'}")
    if not out.parent.is_dir():
        raise ConfigurationError(f"--out {out}: the folder {out.parent} does not exist")
    return out


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


def _minutes(text: str) -> float:
    """A number of minutes >= 0; anything else is a usage error (exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number of minutes >= 0, not {text!r}")
    return value


def _positive(text: str) -> int:
    """A whole number >= 1 (`run --ticks`); anything else is a usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="totesys-etl", description="Move the totesys OLTP database into a "
                                     "star-schema warehouse through an S3 lake, exactly once.",
                                     epilog=EVERYDAY, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="the stages' log lines as readable text on stderr (on a terminal they show anyway)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start local PostgreSQL and moto's server").set_defaults(func=_up)
    commands.add_parser("down", help="stop what `up` started; everything, the lake included, stays under .local/"
                        ).set_defaults(func=_down)
    commands.add_parser("reset", help="empty the warehouse and up's buckets, keep the source: start from a "
                        "first run").set_defaults(func=_reset)
    p = commands.add_parser("seed", help="recreate the 11 source tables with reproducible data (refused over a "
                            "loaded pipeline: reset first)")
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
    p.add_argument("--ticks", type=_positive, default=None, help="stop after N ticks, N >= 1 (default: run until "
                   "stopped)")
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
    p = commands.add_parser("logs", help="the JSON log lines local commands kept under .local/logs/ (CloudWatch's, "
                            "in AWS), readable or --json")
    p.add_argument("--stage", default=None, help="only this stage's lines (ingest, process, load)")
    p.add_argument("--run", default=None, metavar="RUN_ID", help="only this run's lines")
    p.add_argument("--since", type=_minutes, default=None, metavar="MINUTES", help="only the last MINUTES minutes")
    p.add_argument("--json", action="store_true", help="the JSON lines as kept, one per line")
    p.set_defaults(func=_logs)
    p = commands.add_parser("report", help="write a self-contained HTML report from the warehouse's views")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="where to write it (default .local/report.html)")
    p.set_defaults(func=_report)
    p = commands.add_parser("demo", help="up, reset, seed, tick, simulate, courier files, tick, reconcile, "
                                         "summary, report")
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
    home = find_home()
    if home is not None and args.command in KEEPS_LOGS:
        logs.keep(home)
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
    except BrokenPipeError:  # `totesys-etl logs | head`: the reader left; nothing more to say to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush cannot fail again
        return 1
    except Exception as e:  # a bug: one line naming it; the message is left out, it may hold a setting
        print(f"totesys-etl {args.command}: unexpected {type(e).__name__} (run with TOTESYS_LOG_LEVEL=INFO "
              f"for the handlers' logs)", file=sys.stderr)
        return 1
