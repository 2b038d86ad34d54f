"""Lambda entry point of the ingest stage, invoked by the EventBridge schedule.

The event carries nothing the run needs (`{}` and a scheduled event are alike) and `context`
may be None: settings come from the environment, state from the lake.
"""
from __future__ import annotations

from totesys_etl import failures
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.ingest.run import ingest
from totesys_etl.logs import StageLog, failures_logged, lambda_fields

# Built in Lambda's init phase, once per container (AWS's advice for SDK clients): a warm invocation
# then pays nothing for it (~0.1 s in a new process). Later calls reuse it; another endpoint gets its own.
s3.client()


def lambda_handler(event: dict | None, context: object = None) -> dict:
    """`{"stage": "ingest", "run_id", "rows": {table: n}, "files", "quarantined", "seconds"}` (the
    run's `RunResult`); raises on failure after one ERROR line whose `error_kind` the alarms count."""
    log = StageLog("ingest", **lambda_fields(context))
    with failures_logged(log, "ingest", on_failure=lambda error: failures.record("ingest", error)):
        return {"stage": "ingest", **ingest(Settings.from_env(), log).to_json()}
