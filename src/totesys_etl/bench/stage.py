"""One stage's handler in a process of its own, as a Lambda invocation: `make bench` measures it.

    python -m totesys_etl.bench.stage <ingest|process|load> [EVENT_JSON] [--started EPOCH_SECONDS]

Prints one JSON object on stdout: `handler_s` (the handler call alone, timed inside the
process), `process_start_s` (from `--started`, the caller's clock just before it spawned the
process, to the moment the handler is called: interpreter start-up and imports, what a Lambda's
cold start costs; without `--started`, from this module's first line), `process_start_cpu_s` (the
CPU seconds the process used until then: on a shared machine it moves far less than the wall
clock, so it is what to compare when changing imports), `imported_by_handler` (the top-level
packages first imported during the call: start-up cost that `process_start_s` does not show),
`peak_rss_mb` (`resource.getrusage`, the whole process's high-water mark), `peak_tmp_mb` (the
most the handler held in its temporary folder at once: what Lambda's /tmp must hold, see
`TmpWatch`; with parts, the part processes' files count too), the handler's `result`, and with a
local fan-out `parts`: each part process's `seconds` and `peak_rss_mb`. The handler's own JSON
log lines go to stderr. Exit 1, after the same JSON with `error`, when the handler raised.
"""
from __future__ import annotations

import time

_MODULE_START = time.time()

import argparse  # noqa: E402 - the clock above must start before any import
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402

HANDLERS = {stage: f"totesys_etl.{stage}.handler" for stage in ("ingest", "process", "load")}


def peak_rss_mb() -> float:
    """This process's peak resident set in MB (Linux reports `ru_maxrss` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class TmpWatch:
    """The peak size of the files under `folder`, sampled every `interval` seconds in a thread.

    The stages keep their files in `tempfile`'s folder (in Lambda, /tmp: the only writable place),
    so pointing `tempfile` at a fresh folder and sampling it measures what a Lambda's
    `ephemeral_storage` must hold. Sampling can miss a peak shorter than `interval`; at the sizes
    that matter a file lives for seconds (written, uploaded, deleted), so the miss is negligible.
    """

    def __init__(self, folder: str, interval: float = 0.02):
        self.folder, self.interval = folder, interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tmp-watch", daemon=True)

    def size(self) -> int:
        """Bytes in the files under the folder now (files vanishing mid-walk are skipped)."""
        total = 0
        for root, _dirs, files in os.walk(self.folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return total

    def _run(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self.size())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "TmpWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self.size())

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 1024 / 1024, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m totesys_etl.bench.stage")
    parser.add_argument("stage", choices=sorted(HANDLERS))
    parser.add_argument("event", nargs="?", default="{}", help="the event as JSON (default: {}, a sweep)")
    parser.add_argument("--started", type=float, default=None,
                        help="the caller's time.time() just before it started this process")
    args = parser.parse_args(argv)
    event = json.loads(args.event)
    handler = importlib.import_module(HANDLERS[args.stage]).lambda_handler
    ready, ready_cpu = time.time(), time.process_time()
    outcome = {"stage": args.stage,
               "process_start_s": round(ready - (args.started if args.started is not None else _MODULE_START), 4),
               "process_start_cpu_s": round(ready_cpu, 4)}
    # A fresh temporary folder of the handler's own, as a new Lambda container's /tmp.
    scratch = tempfile.mkdtemp(prefix=f"totesys-{args.stage}-tmp-")
    tempfile.tempdir = scratch
    os.environ["TMPDIR"] = scratch  # a local fan-out's part processes too: `peak_tmp_mb` counts them all
    loaded = {name.partition(".")[0] for name in sys.modules}
    try:
        with TmpWatch(scratch) as tmp:
            start = time.perf_counter()
            try:
                outcome["result"] = handler(event, None)
            except Exception as e:  # the handler logged it; the caller needs the outcome either way
                outcome["error"] = f"{type(e).__name__}: {e}"
            outcome["handler_s"] = round(time.perf_counter() - start, 4)
    finally:
        tempfile.tempdir = None
        shutil.rmtree(scratch, ignore_errors=True)
    outcome["imported_by_handler"] = sorted({name.partition(".")[0] for name in sys.modules} - loaded)
    outcome["peak_rss_mb"] = peak_rss_mb()
    outcome["peak_tmp_mb"] = tmp.peak_mb
    fanout = sys.modules.get("totesys_etl.fanout")
    if fanout is not None and fanout.local_outcomes:  # a run in parts, each part a process of its own
        outcome["parts"] = fanout.local_outcomes
    print(json.dumps(outcome, default=str), flush=True)
    return 1 if "error" in outcome else 0


if __name__ == "__main__":
    sys.exit(main())
