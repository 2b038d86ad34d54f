"""The load Lambda: a processed manifest's S3 event loads that run; a part request (the fan-out's
event) stages that part of a run in parts; any other event sweeps."""
from __future__ import annotations

from totesys_etl import failures
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.events import parse_event
from totesys_etl.load.run import STAGE, load
from totesys_etl.logs import StageLog, failures_logged, lambda_fields

# Built in Lambda's init phase, once per container (AWS's advice for SDK clients): a warm invocation
# then pays nothing for it (~0.1 s in a new process). Later calls reuse it; another endpoint gets its own.
s3.client()


def lambda_handler(event, context=None) -> dict:
    """Load the runs whose processed manifests the event names, or sweep (`{}`, a schedule).

    Keys that are not run manifests of the processed bucket are ignored. Returns the summary of
    the runs this call loaded; raises (after an ERROR line with its error_kind) only when work failed.
    """
    log = StageLog(STAGE, **lambda_fields(context))
    with failures_logged(log, "load", on_failure=lambda error: failures.record("load", error)):
        settings = Settings.from_env()
        invocation = parse_event(event)
        run_ids = None
        if not invocation.sweep and invocation.part is None:
            run_ids, _ignored = invocation.manifest_runs(settings.processed_bucket)
        result = load(settings, run_ids, log=log, part=invocation.part)
    log.info("load finished", status=result["status"], runs=len(result["runs"]), seconds=result["seconds"])
    return result
