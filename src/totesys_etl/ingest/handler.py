"""Lambda entry point of the ingest stage: the EventBridge schedule, and courier files' S3 events.

A scheduled event (or `{}`) runs the totesys ingest, then sweeps the landing bucket for courier
files not yet taken (contract §9); an `ObjectCreated` event of the landing bucket takes the objects
it names. `context` may be None: settings come from the environment, state from the lake.
"""
from __future__ import annotations

from totesys_etl import events, failures
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.ingest import courier
from totesys_etl.ingest.cdc import run as cdc_run
from totesys_etl.ingest.cdc.settings import source_mode
from totesys_etl.ingest.run import ingest as poll
from totesys_etl.logs import StageLog, Timer, failures_logged, lambda_fields
from totesys_etl.runs import StageResult

# Built in Lambda's init phase, once per container (AWS's advice for SDK clients): a warm invocation
# then pays nothing for it (~0.1 s in a new process). Later calls reuse it; another endpoint gets its own.
s3.client()


def lambda_handler(event: dict | None, context: object = None) -> dict:
    """Scheduled: `{"stage": "ingest", "run_id", "rows": {table: n}, "files", "quarantined", "seconds"}`
    (the totesys run's `RunResult`), with a landing bucket also `"courier": [runs]`, one per file taken. An S3 event:
    `{"stage": "ingest", "status": "ok", "runs": [...], "seconds"}`. Raises on failure after one
    ERROR line whose `error_kind` the alarms count."""
    timer, fields = Timer(), lambda_fields(context)
    log = StageLog("ingest", **fields)
    with failures_logged(log, "ingest", on_failure=lambda error: failures.record("ingest", error)):
        settings = Settings.from_env()
        invocation = events.parse_event(event)
        if not invocation.sweep:
            runs = courier.take_event_objects(settings, invocation, log) if settings.landing_bucket else []
            return StageResult("ingest", tuple(runs), timer.seconds).to_json()
        if not settings.landing_bucket:
            return {"stage": "ingest", **_ingest(settings, log).to_json()}
        try:
            result = {"stage": "ingest", **_ingest(settings, log).to_json()}
        finally:  # the courier sweep runs whether or not the source could be read
            swept = courier.sweep_logged(settings, StageLog("ingest", **fields))
        return {**result, "courier": [r.to_json() for r in swept]}


def _ingest(settings: Settings, log: StageLog):
    """The totesys run: polling (default) or the replication slot (`TOTESYS_SOURCE_MODE=cdc`, contract §10),
    chosen here once; both write the same lake layout."""
    return (cdc_run.ingest if source_mode() == "cdc" else poll)(settings, log)
