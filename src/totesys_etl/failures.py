"""The last failure of each stage, kept in the lake for `totesys-etl status` (contract §4: a stage's
own create-only state under `_state/`).

A handler that fails logs one ERROR line (the alarm's source) and also leaves a small record,
`_state/failures/<stage>/<newest-first key>.json`, in the bucket it writes: the ingest's in the
ingested bucket, the processor's and loader's in the processed one. Recording is best effort: when
S3 itself is what failed, the log line and the alarm still say so.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.errors import describe, kind_of, parse_json

PREFIX = "_state/failures/"
BUCKET_VARIABLE = {"ingest": "TOTESYS_INGEST_BUCKET", "process": "TOTESYS_PROCESSED_BUCKET",
                   "load": "TOTESYS_PROCESSED_BUCKET",
                   "fx": "TOTESYS_INGEST_BUCKET"}  # the FX source's: it never fails a run, so no stage keeps it
#: The most bytes of a failure record read: a record is well under 1 KB (its reason is one line of at
#: most 300 characters); a larger object under the prefix is not one.
MAX_BYTES = 64 << 10


def record(stage: str, error: BaseException, now: datetime | None = None) -> None:
    """Keep `error` as the stage's newest failure (one line, no credential: `errors.describe`)."""
    bucket = os.environ.get(BUCKET_VARIABLE[stage])
    if not bucket:
        return  # not even the bucket is configured: the log line is all there is
    now = now or datetime.now(timezone.utc)
    key = f"{PREFIX}{stage}/{lake.newest_first(lake.run_id_at(now))}.json"
    entry = {"stage": stage, "at": now.isoformat(timespec="seconds"), "error_kind": kind_of(error),
             "reason": describe(error)}
    try:
        s3.put_json_create_only(bucket, key, entry)
    except Exception:  # nosec B110 - best effort: S3 may be what failed; the ERROR line was logged
        pass


def newest(bucket: str, stage: str) -> dict | None:
    """The stage's most recent failure record in `bucket` (one short listing), or None."""
    for key in s3.list_keys(bucket, f"{PREFIX}{stage}/", limit=1):
        try:
            entry = parse_json(s3.get_bytes(bucket, key, MAX_BYTES), "its failure record", ValueError)
        except ValueError:
            return {"stage": stage, "reason": "its failure record is not JSON"}
        except s3.TooLarge as e:
            return {"stage": stage, "reason": f"its failure record is {e.size:,} bytes, not read"}
        return entry if isinstance(entry, dict) else None
    return None
