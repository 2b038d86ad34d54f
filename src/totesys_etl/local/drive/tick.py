"""`totesys-etl tick` and `run`: drive the three handlers exactly as AWS does (contract §6).

1. the ingest handler with an EventBridge scheduled event;
2. every waiting bucket notification (moto's S3 -> SQS) handed to the processor, then the
   loader, as the S3 events Lambda would receive;
3. both once more with no event (the sweep), so a run a crash left behind is finished now.
A tick returns once every ingested run that existed when it started is loaded, waiting for a
concurrent tick's lock rather than skipping work (up to 10 minutes, then exit 1).
A run in parts (contract §4) fans out as in AWS: `TOTESYS_FANOUT=local` (unless set otherwise) runs
each part in a child process of its own, through the stage's real handler (fanout.py).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from totesys_etl import lake
from totesys_etl.adapters.postgres import DatabaseError, connect
from totesys_etl.config import Settings
from totesys_etl.errors import EtlError, TickIncomplete, describe
from totesys_etl.events import parse_event
from totesys_etl.fanout import FANOUT_VARIABLE, LOCAL
from totesys_etl.ingest.handler import lambda_handler as ingest_handler
from totesys_etl.load.handler import lambda_handler as load_handler
from totesys_etl.load.ledger import load_mark, loaded_runs
from totesys_etl.local.drive import notifications
from totesys_etl.process.handler import lambda_handler as process_handler
from totesys_etl.runs import StageResult

WAIT_SECONDS = 600
POLL_SECONDS = 0.5


def scheduled_event() -> dict:
    """An EventBridge scheduled event, shaped as AWS sends it to the ingest function."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"version": "0", "id": "local-tick", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": now, "region": "eu-west-2",
            "resources": ["arn:aws:events:eu-west-2:000000000000:rule/totesys-etl-local-ingest"], "detail": {}}


@dataclass
class TickReport:
    run_id: str
    rows: dict = field(default_factory=lambda: {"ingest": 0, "process": 0, "load": 0})
    seconds: dict = field(default_factory=lambda: {"ingest": 0.0, "process": 0.0, "load": 0.0})
    quarantined: int = 0

    def add(self, stage: str, result: dict | None, seconds: float) -> None:
        self.seconds[stage] += seconds
        if not result:
            return
        parsed = StageResult.from_json(result)
        self.rows[stage] += parsed.rows
        self.quarantined += parsed.quarantined

    def summary(self) -> str:
        parts = [f"{stage} {self.rows[stage]:,} rows {self.seconds[stage]:.2f}s" for stage in self.rows]
        note = f", {self.quarantined} quarantined" if self.quarantined else ""
        return f"tick {self.run_id}: " + ", ".join(parts) + note


def _timed(report: TickReport, stage: str, handler, event) -> None:
    start = time.perf_counter()
    result = handler(event, None)
    report.add(stage, result, time.perf_counter() - start)


def _unloaded(settings: Settings, runs: set[str]) -> set[str]:
    """Which of `runs` the warehouse's ledger does not hold yet."""
    conn = connect(settings.warehouse)
    try:
        return runs - loaded_runs(conn, runs)
    finally:
        conn.close()


def _runs_to_finish(settings: Settings) -> set[str]:
    """Ingested runs that exist now and are not loaded: listed from the loader's low-water mark."""
    conn = connect(settings.warehouse)
    try:
        try:
            mark = load_mark(conn)
        except DatabaseError:  # no schema yet: nothing was ever loaded
            mark = None
    finally:
        conn.close()
    return set(lake.runs_after(settings.ingest_bucket, mark))


def _landed(settings: Settings) -> tuple[list[str], float, int]:
    """Courier files' `ObjectCreated` events (contract §9) handed to the ingest handler, as S3 would:
    the runs they made, the handler seconds and rows."""
    if not settings.landing_bucket:
        return [], 0.0, 0
    queue = notifications.ensure(settings.landing_bucket, prefix=None, suffix=None)
    run_ids, seconds, rows = [], 0.0, 0
    for event, receipt in notifications.receive(queue):
        if parse_event(event).sweep:  # S3's s3:TestEvent when the notification is set up: the schedule sweeps
            notifications.acknowledge(queue, receipt)
            continue
        start = time.perf_counter()
        try:
            parsed = StageResult.from_json(ingest_handler(event, None))
            run_ids += [r.run_id for r in parsed.runs]
            rows += parsed.rows
        except EtlError:  # logged by the handler; the scheduled sweep below takes the file again
            pass
        seconds += time.perf_counter() - start
        notifications.acknowledge(queue, receipt)
    return run_ids, seconds, rows


@contextmanager
def _local_fanout():
    """The handlers this tick runs fan parts out to child processes (unless a fan-out is set)."""
    if os.environ.get(FANOUT_VARIABLE):
        yield
        return
    os.environ[FANOUT_VARIABLE] = LOCAL
    try:
        yield
    finally:
        os.environ.pop(FANOUT_VARIABLE, None)


def tick(settings: Settings | None = None, wait_seconds: float = WAIT_SECONDS) -> TickReport:
    with _local_fanout():
        return _tick(settings, wait_seconds)


def _tick(settings: Settings | None, wait_seconds: float) -> TickReport:
    settings = settings or Settings.from_env()
    queues = {stage: notifications.ensure(bucket) for stage, bucket in
              (("process", settings.ingest_bucket), ("load", settings.processed_bucket))}
    pending = _runs_to_finish(settings)
    landed, landed_seconds, landed_rows = _landed(settings)
    start = time.perf_counter()
    result = ingest_handler(scheduled_event(), None)
    report = TickReport(result["run_id"])
    report.add("ingest", result, time.perf_counter() - start + landed_seconds)
    courier_runs = [StageResult.from_json({"stage": "ingest", **r}).runs[0] for r in result.get("courier", [])]
    report.rows["ingest"] += landed_rows + sum(sum(r.rows.values()) for r in courier_runs)
    pending |= {result["run_id"], *landed, *(r.run_id for r in courier_runs)}

    for stage, handler in (("process", process_handler), ("load", load_handler)):
        for event, receipt in notifications.receive(queues[stage]):
            _timed(report, stage, handler, event)
            notifications.acknowledge(queues[stage], receipt)
    deadline = time.monotonic() + wait_seconds
    while True:
        _timed(report, "process", process_handler, {})
        _timed(report, "load", load_handler, {})
        pending = _unloaded(settings, pending)
        if not pending:
            return report
        if time.monotonic() > deadline:
            raise TickIncomplete(f"{len(pending)} run(s) still not loaded after {wait_seconds:.0f} s "
                                 f"(e.g. {min(pending)}): another loader holds the lock or processing failed")
        time.sleep(POLL_SECONDS)


def run(interval: float, ticks: int | None, out) -> int:
    """Tick every `interval` seconds (measured start to start), printing a line per tick.

    A failed tick is printed and the schedule goes on, as EventBridge's would; the number of
    failed ticks is returned (the command exits non-zero if any failed).
    """
    done = failed = 0
    while ticks is None or done < ticks:
        started = time.monotonic()
        done += 1
        label = f"[{done}{'/' + str(ticks) if ticks else ''}]"
        try:
            line = tick().summary()
        except Exception as e:  # any failure, as a schedule meets it: printed, then the next tick
            failed += 1
            line = f"tick failed: {describe(e)}"
        print(f"{label} {line}", file=out, flush=True)
        if ticks is None or done < ticks:
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    print(f"{done} tick(s), {failed} failed", file=out, flush=True)
    return failed
