"""Lambda events as typed values: an S3 notification's objects, or a request to sweep.

contract §4: each record is guaranteed only `eventSource`, `eventName`, `s3.bucket.name` and
`s3.object.key`, the key URL-encoded (`/` may arrive as `%2F`). An event without records (`{}`,
an EventBridge schedule) or an `s3:TestEvent` means "sweep".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote_plus

from totesys_etl.lake import run_id_of_manifest


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


@dataclass(frozen=True)
class Invocation:
    """What a stage was asked to do: handle these objects, or (if `sweep`) find its own work.

    An event with records that name nothing to do (say only `ObjectRemoved`) is neither: it is
    not a request to sweep the whole lake.
    """

    objects: tuple[S3Object, ...]
    sweep: bool = False

    def manifest_runs(self, bucket: str) -> tuple[list[str], list[S3Object]]:
        """The run ids of `bucket`'s run manifests this event names (each once, in order), and the
        objects it names that are not (to be logged and ignored)."""
        run_ids, others = set(), []
        for obj in self.objects:
            run_id = run_id_of_manifest(obj.key) if obj.bucket == bucket else None
            if run_id is None:
                others.append(obj)
            else:
                run_ids.add(run_id)
        return sorted(run_ids), others


def parse_event(event) -> Invocation:
    """Read an S3 event (SQS-wrapped or direct), an EventBridge event, `{}` or `None`."""
    if not isinstance(event, dict) or event.get("Event") == "s3:TestEvent" or not event.get("Records"):
        return Invocation((), sweep=True)
    objects = []
    for record in event["Records"]:
        if not isinstance(record, dict):
            continue
        if record.get("eventSource") == "aws:sqs" and isinstance(record.get("body"), str):
            try:
                objects.extend(parse_event(json.loads(record["body"])).objects)
            except ValueError:
                continue
            continue
        if str(record.get("eventName", "")).startswith("ObjectCreated"):
            s3 = record.get("s3") or {}
            bucket, key = (s3.get("bucket") or {}).get("name"), (s3.get("object") or {}).get("key")
            if bucket and key:
                objects.append(S3Object(bucket, unquote_plus(key)))
    return Invocation(tuple(objects))
