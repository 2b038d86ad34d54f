"""Lambda events as typed values: an S3 notification's objects, or a request to sweep.

contract §4: each record is guaranteed only `eventSource`, `eventName`, `s3.bucket.name` and
`s3.object.key`, the key URL-encoded (`/` may arrive as `%2F`). An event without records (`{}`,
an EventBridge schedule) or an `s3:TestEvent` means "sweep". A stage's own fan-out asks for one
part of a run split into parts (contract §4 "Parts") with `{"totesys_part": {...}}` (`part_event`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from totesys_etl.errors import InvalidInput, parse_json
from totesys_etl.lake import MAX_PARTS, RUN_ID, run_id_of_manifest

#: What a table name in a part request may look like (the stage then looks it up in its manifest).
TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


#: The event key of a request to handle one part of one table of one run (contract §4 "Parts"):
#: `{"totesys_part": {"run_id", "table", "part"}}`, sent by the stage's own fan-out, never by S3.
PART_EVENT_KEY = "totesys_part"


@dataclass(frozen=True)
class PartRequest:
    """One part of one table of one run, named by a fan-out event; checked only for its shape here.

    `table` is the table's name in the manifest the stage reads. Whether the run and the part
    exist is for the stage to find out from that manifest: the request is never trusted more.
    """

    run_id: str
    table: str
    part: int


@dataclass(frozen=True)
class Invocation:
    """What a stage was asked to do: handle these objects, or (if `sweep`) find its own work.

    An event with records that name nothing to do (say only `ObjectRemoved`) is neither: it is
    not a request to sweep the whole lake.
    """

    objects: tuple[S3Object, ...]
    sweep: bool = False
    part: PartRequest | None = None

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
    if isinstance(event, dict) and PART_EVENT_KEY in event:
        return Invocation((), part=_part_request(event[PART_EVENT_KEY]))
    if not isinstance(event, dict) or event.get("Event") == "s3:TestEvent" or not event.get("Records"):
        return Invocation((), sweep=True)
    objects = []
    for record in event["Records"]:
        if not isinstance(record, dict):
            continue
        if record.get("eventSource") == "aws:sqs" and isinstance(record.get("body"), str):
            try:
                objects.extend(parse_event(parse_json(record["body"], "an SQS message's body", ValueError)).objects)
            except ValueError:
                continue
            continue
        if str(record.get("eventName", "")).startswith("ObjectCreated"):
            s3 = record.get("s3") or {}
            bucket, key = (s3.get("bucket") or {}).get("name"), (s3.get("object") or {}).get("key")
            if bucket and key:
                objects.append(S3Object(bucket, unquote_plus(key)))
    return Invocation(tuple(objects))


def part_event(request: PartRequest) -> dict:
    """The event that asks a stage for one part: what `parse_event` reads back as `request`."""
    return {PART_EVENT_KEY: {"run_id": request.run_id, "table": request.table, "part": request.part}}


def _part_request(body) -> PartRequest:
    """A fan-out event's request; InvalidInput (one line) unless it has exactly the expected shape."""
    if (not isinstance(body, dict) or not isinstance(body.get("run_id"), str) or not RUN_ID.fullmatch(body["run_id"])
            or not isinstance(body.get("table"), str) or not TABLE_NAME.fullmatch(body["table"])
            or not isinstance(body.get("part"), int) or isinstance(body["part"], bool)
            or not 0 <= body["part"] < MAX_PARTS):
        raise InvalidInput(f"not a part request: {str(body)[:200]!r}")
    return PartRequest(body["run_id"], body["table"], body["part"])
