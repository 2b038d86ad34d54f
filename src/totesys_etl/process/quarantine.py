"""Nothing lost (SPEC §3): bad input is copied aside with its reason, logged, and the run goes on.

`quarantine/<run_id>/<original key>` in the processed bucket holds a copy (the original stays
where it is) and `<that key>.reason.json` says why. Both are create-only, so a rerun or a second
processor leaves them as they are.
"""
from __future__ import annotations

from botocore.exceptions import ClientError

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.logs import StageLog

PREFIX = "quarantine/"
FILE = "quarantined_file"
MANIFEST = "quarantined_manifest"


def quarantine_key(run_id: str, key: str) -> str:
    return f"{PREFIX}{run_id}/{key}"


def quarantine(settings: Settings, run_id: str, key: str, reason: str, error_kind: str, log: StageLog,
               copy: bool = True) -> dict:
    """Copy `key` from the ingest bucket aside (unless `copy` is False), write the reason, log it.

    Returns the entry the processed manifest lists. A hostile manifest entry passes `copy=False`
    and the manifest's own key: the object it names is never touched.
    """
    target = quarantine_key(run_id, key)
    if copy:
        try:
            s3.copy_create_only(settings.ingest_bucket, key, settings.processed_bucket, target)
        except ClientError as e:
            if not lake.is_missing(e):
                raise
            reason = f"{reason} (the object does not exist)"
    entry = {"key": key, "reason": reason, "error_kind": error_kind}
    s3.put_json_create_only(settings.processed_bucket, f"{target}.reason.json", entry)
    log.error(f"quarantined {key}: {reason}", error_kind=error_kind, key=key, quarantine_key=target)
    return entry
