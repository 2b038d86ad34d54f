"""One stage's handler in a process of its own, as a Lambda invocation: `make bench` measures it.

    python -m totesys_etl.local.stage <ingest|process|load> [EVENT_JSON] [--started EPOCH_SECONDS]

Prints one JSON object on stdout: `handler_s` (the handler call alone, timed inside the
process), `process_start_s` (from `--started`, the caller's clock just before it spawned the
process, to the moment the handler is called: interpreter start-up and imports, what a Lambda's
cold start costs; without `--started`, from this module's first line), `peak_rss_mb`
(`resource.getrusage`, the whole process's high-water mark) and the handler's `result`. The
handler's own JSON log lines go to stderr. Exit 1, after the same JSON with `error`, when the
handler raised.
"""
from __future__ import annotations

import time

_MODULE_START = time.time()

import argparse  # noqa: E402 - the clock above must start before any import
import importlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

HANDLERS = {stage: f"totesys_etl.{stage}.handler" for stage in ("ingest", "process", "load")}


def peak_rss_mb() -> float:
    """This process's peak resident set in MB (Linux reports `ru_maxrss` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m totesys_etl.local.stage")
    parser.add_argument("stage", choices=sorted(HANDLERS))
    parser.add_argument("event", nargs="?", default="{}", help="the event as JSON (default: {}, a sweep)")
    parser.add_argument("--started", type=float, default=None,
                        help="the caller's time.time() just before it started this process")
    args = parser.parse_args(argv)
    event = json.loads(args.event)
    handler = importlib.import_module(HANDLERS[args.stage]).lambda_handler
    ready = time.time()
    outcome = {"stage": args.stage,
               "process_start_s": round(ready - (args.started if args.started is not None else _MODULE_START), 4)}
    start = time.perf_counter()
    try:
        outcome["result"] = handler(event, None)
    except Exception as e:  # the handler logged it; the caller needs the outcome either way
        outcome["error"] = f"{type(e).__name__}: {e}"
    outcome["handler_s"] = round(time.perf_counter() - start, 4)
    outcome["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(outcome, default=str), flush=True)
    return 1 if "error" in outcome else 0


if __name__ == "__main__":
    sys.exit(main())
