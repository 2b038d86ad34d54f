"""Lambda events as typed values: an S3 notification's objects, or a request to sweep.

SPEC §4: each record is guaranteed only `eventSource`, `eventName`, `s3.bucket.name` and
`s3.object.key`, the key URL-encoded (`/` may arrive as `%2F`). An event without records (`{}`,
an EventBridge schedule) or an `s3:TestEvent` means "sweep".
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


@dataclass(frozen=True)
class Invocation:
    """What a stage was asked to do: handle these objects, or (if `sweep`) find its own work."""

    objects: tuple[S3Object, ...]

    @property
    def sweep(self) -> bool:
        return not self.objects


def parse_event(event) -> Invocation:
    """Read an S3 event (SQS-wrapped or direct), an EventBridge event, `{}` or `None`."""
    if not isinstance(event, dict) or event.get("Event") == "s3:TestEvent":
        return Invocation(())
    objects = []
    for record in event.get("Records") or ():
        if not isinstance(record, dict):
            continue
        if record.get("eventSource") == "aws:sqs" and isinstance(record.get("body"), str):
            import json

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
