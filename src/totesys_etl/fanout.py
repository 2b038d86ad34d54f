"""Fan-out: asking other invocations of a stage to handle the parts of a run (contract §4 "Parts").

A stage that meets a run split into parts calls `fan_out(stage, requests)`. When a fan-out is
configured, each request goes to an invocation of its own (the event is `events.part_event`) and
`fan_out` returns True: each part invocation does its part, and whichever finds every part done
finishes the run (the sweep finishes it otherwise). When none is configured, it returns False and
the caller handles the parts itself, one after another, in this invocation.

`TOTESYS_FANOUT` chooses (readme_files/adr/0006-parts.md):
- `lambda`: the stage's own function (`AWS_LAMBDA_FUNCTION_NAME`, which Lambda sets) invoked
  asynchronously (`InvocationType=Event`) once per part; returns as soon as Lambda has queued them.
  Lambda retries a failed part twice; one that still fails is left to the stage's scheduled sweep.
- `local`: the local runtime's stand-in (`totesys-etl tick` sets it). Each part runs the stage's
  real handler in a child process of its own, `TOTESYS_FANOUT_WORKERS` at a time (default: the
  machine's cores, at most 4). It waits for them (the caller then finishes the run itself), since
  a local command must not leave processes behind: a part that fails is logged and fails the
  stage's call (as the run's own failure would), after the other parts have run; a part that ends
  with 137 (a crash point, contract §6) ends this process with 137 at once.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess  # nosec B404 - the local fan-out runs this package's own module, never a shell
import sys
import time
from typing import Mapping, Sequence

from totesys_etl.config import whole_number_setting
from totesys_etl.errors import ConfigurationError, LoadFailed, ProcessFailed, describe
from totesys_etl.events import PartRequest, part_event
from totesys_etl.logs import StageLog

#: The setting: the most rows a run in parts may hold and still be handled whole by one invocation
#: of each stage (the processor processes its parts itself, the loader copies them as files). Parts
#: in parallel pay only where one invocation cannot hold the run: below this, the fan-out's process
#: start-ups and the loader's staging (every row written three times) cost more than they save.
WHOLE_RUN_ROWS_VARIABLE = "TOTESYS_WHOLE_RUN_ROWS"
#: 50,000,000 rows, about a 13M-order first load: 10M orders' 38M rows in parts took 87 to 101 s
#: to load whole and 23 s to process on a 2-core machine (readme_files/benchmarks.md), so a
#: several times slower warehouse or function still handles 50M within half of Lambda's 15 minutes.
DEFAULT_WHOLE_RUN_ROWS = 50_000_000
#: Which fan-out a deployment uses; unset means none (the caller handles every part itself).
FANOUT_VARIABLE = "TOTESYS_FANOUT"
LOCAL, LAMBDA = "local", "lambda"
#: What the local fan-out's part processes run with beside the caller's settings. The caller waits
#: for them holding what it holds (a loader, the loaders' lock), and finishes the run once they end,
#: so a part process that finds the lock held must leave the publishing to it at once: waiting
#: for the lock would only wait for its own caller (load/run.py).
CHILD_SETTINGS = {"TOTESYS_LOCK_WAIT_SECONDS": "0"}
#: How many part processes the local fan-out runs at once.
WORKERS_VARIABLE = "TOTESYS_FANOUT_WORKERS"
#: The stages that take part requests, and the module of each one's Lambda entry point.
HANDLERS = {"process": "totesys_etl.process.handler", "load": "totesys_etl.load.handler"}
_FAILED = {"process": ProcessFailed, "load": LoadFailed}
#: The exit status of a crash point (contract §6): the whole command ends with it.
CRASHED = 137
#: What each part process of this process reported (`{"run_id", "table", "part", "seconds",
#: "peak_rss_mb"}`), in the order they ended: the local fan-out's record, which `make bench` reports.
local_outcomes: list[dict] = []


def fan_out(stage: str, requests: Sequence[PartRequest], env: Mapping[str, str] | None = None) -> bool:
    """Send each of `stage`'s part requests to an invocation of its own; False if none is configured."""
    env = os.environ if env is None else env
    mode = env.get(FANOUT_VARIABLE, "")
    if not mode or not requests:
        return False
    if stage not in HANDLERS:
        raise ValueError(f"{stage!r} takes no part requests")
    if mode == LOCAL:
        _local(stage, requests, env)
        return True
    if mode == LAMBDA:
        _lambda(stage, requests, env)
        return True
    raise ConfigurationError(f"{FANOUT_VARIABLE}={mode[:40]!r} is not a fan-out this build knows")


def handles_whole(rows: int, env: Mapping[str, str] | None = None) -> bool:
    """Whether a run whose parts hold `rows` rows (as its manifest counts them) is handled whole, by
    the invocation that meets it, rather than fanned out (`TOTESYS_WHOLE_RUN_ROWS`)."""
    env = os.environ if env is None else env
    return rows <= whole_number_setting(env, WHOLE_RUN_ROWS_VARIABLE, DEFAULT_WHOLE_RUN_ROWS, "rows")


def workers(env: Mapping[str, str]) -> int:
    return whole_number_setting(env, WORKERS_VARIABLE, max(1, min(4, os.cpu_count() or 1)), "processes")


def _local(stage: str, requests: Sequence[PartRequest], env: Mapping[str, str]) -> None:
    """Each part in a child process running the stage's handler, a bounded number at once."""
    log, limit = StageLog(stage), workers(env)
    todo, running, failed = list(requests), [], []
    while todo or running:
        while todo and len(running) < limit:
            request = todo.pop(0)
            child = subprocess.Popen([sys.executable, "-m", __name__, stage], stdin=subprocess.PIPE,  # nosec B603
                                     stdout=subprocess.PIPE, env={**env, **CHILD_SETTINGS})
            child.stdin.write(json.dumps(part_event(request)).encode())
            child.stdin.close()
            running.append((request, child))
        for request, child in list(running):
            status = child.poll()
            if status is None:
                continue
            running.remove((request, child))
            _record_outcome(request, child.stdout.read())
            child.stdout.close()
            if status == CRASHED:
                os._exit(CRASHED)  # contract §6: a crash point in a process it started ends the command
            if status:
                failed.append(request)
                log.bind(run_id=request.run_id).error(
                    f"part {request.part} of {request.table} failed (exit status {status})",
                    _FAILED[stage].error_kind, table=request.table, part=request.part)
        if running:
            time.sleep(0.02)
    if failed:
        failed.sort(key=lambda r: (r.table, r.part))
        names = ", ".join(f"{r.table} part {r.part}" for r in failed[:5])
        raise _FAILED[stage](f"{len(failed)} part(s) of run {failed[0].run_id} failed: {names}")


def _record_outcome(request: PartRequest, output: bytes) -> None:
    """Keep what a part process reported on its last line (nothing if it died before saying)."""
    try:
        measured = json.loads(output.decode().strip().splitlines()[-1])
    except (IndexError, ValueError, UnicodeDecodeError):
        return
    if isinstance(measured, dict):
        local_outcomes.append({"run_id": request.run_id, "table": request.table, "part": request.part,
                               "seconds": measured.get("seconds"), "peak_rss_mb": measured.get("peak_rss_mb")})


def _lambda(stage: str, requests: Sequence[PartRequest], env: Mapping[str, str]) -> None:
    """An asynchronous invocation of this function per part; Lambda queues each and retries it."""
    function = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
    if not function:
        raise ConfigurationError(f"{FANOUT_VARIABLE}={LAMBDA} needs AWS_LAMBDA_FUNCTION_NAME (Lambda sets it)")
    import botocore.session  # only this mode needs a Lambda client (botocore's: see adapters/s3.py)
    from botocore.exceptions import BotoCoreError, ClientError

    client = botocore.session.get_session().create_client("lambda")
    for request in requests:
        try:
            client.invoke(FunctionName=function, InvocationType="Event",
                          Payload=json.dumps(part_event(request)).encode())
        except (BotoCoreError, ClientError) as e:
            raise _FAILED[stage](f"could not invoke {function} for {request.table} part {request.part} "
                                 f"of run {request.run_id}: {describe(e)}") from None


def main(argv: Sequence[str]) -> int:
    """A local part invocation: the stage's handler with the part event read from stdin."""
    if len(argv) != 1 or argv[0] not in HANDLERS:
        print(f"usage: python -m {__name__} {{{'|'.join(HANDLERS)}}} < event.json", file=sys.stderr)
        return 2
    handler = importlib.import_module(HANDLERS[argv[0]]).lambda_handler
    event, start = json.loads(sys.stdin.read()), time.perf_counter()
    try:
        handler(event, None)
        status = 0
    except Exception:  # the handler logged it with its error_kind; the parent reports the part
        status = 1
    import resource  # Linux reports ru_maxrss in KiB
    print(json.dumps({"seconds": round(time.perf_counter() - start, 4),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
