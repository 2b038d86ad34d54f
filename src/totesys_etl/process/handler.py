"""Lambda entry point of the processor: parse the event, process the runs it names (or sweep).

An ingested manifest's `ObjectCreated` event processes that run; an event with no S3 records
(`{}`, an EventBridge schedule, `s3:TestEvent`) sweeps every run not yet processed; a part request
(`{"totesys_part": ...}`, the stage's own fan-out) processes that one part (parts.py). The handler
returns normally when there is nothing to do; it raises only when work failed, after an ERROR
line with the failure's `error_kind`.
"""
from __future__ import annotations

import pyarrow as pa

from totesys_etl import events, failures
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.logs import StageLog, Timer, failures_logged, lambda_fields
from totesys_etl.process import parts, run
from totesys_etl.runs import StageResult

# Built in Lambda's init phase, once per container (AWS's advice for SDK clients): a warm invocation
# then pays nothing for it (~0.1 s in a new process). Later calls reuse it; another endpoint gets its own.
s3.client()
# Arrow's default pool (mimalloc) took fresh huge pages from the kernel for each of the processor's
# threads: at 100,000 orders 0.1 to 0.6 s of kernel CPU per first run, against 0.12 to 0.23 s with
# jemalloc, which holds 45 MB more than mimalloc at 1M orders (glibc's allocator: 190 MB more).
# readme_files/benchmarks.md, "100,000 orders: the processor's fixed costs". Process-wide.
try:
    pa.set_memory_pool(pa.jemalloc_memory_pool())
except NotImplementedError:
    pa.set_memory_pool(pa.system_memory_pool())


def lambda_handler(event, context=None) -> dict:
    """`{"stage": "process", "status": "ok", "runs": [...], "seconds"}`, runs processed by this call."""
    timer = Timer()
    log = StageLog(run.STAGE, **lambda_fields(context))
    with failures_logged(log, "processing", on_failure=lambda error: failures.record("process", error)):
        settings = Settings.from_env()
        invocation = events.parse_event(event)
        if invocation.part is not None:  # one part of a run in parts, from the stage's own fan-out
            runs = [r for r in [parts.process_part(settings, invocation.part, log)] if r is not None]
        elif invocation.sweep:
            runs = run.sweep(settings, log)
        else:
            runs = run.process_runs(settings, run.manifest_runs(settings, invocation, log), log)
    return StageResult(run.STAGE, tuple(runs), timer.seconds).to_json()
