"""The courier figure of `make bench` (issue 29): one large courier file, ingested, processed, loaded.

A JSON Lines file of about `megabytes` MB of delivery events is generated on disk, uploaded to a
landing bucket of the bench's own, and taken by the ingest handler in a process of its own (as its
`ObjectCreated` event would), then the processor's and loader's sweeps, each in its own process.
Reported under the key `courier` of `.local/bench.json`: events/s of each stage and its peak RSS.
The reader streams (ingest/courier_files.py), so the ingest's peak RSS should not grow with the
file: compare a run at 50 MB with one at 1 GB.

Optional (`--courier-mb N`, `make bench COURIER_MB=N`): at 1 GB it takes minutes on 2 cores.
"""
from __future__ import annotations

import os
from pathlib import Path

import boto3

from totesys_etl.bench.scratch import BenchFailed, Pipeline, Services, fresh_buckets, prepare

LANDING = "totesys-etl-bench-landing"
KEY = "bench/large-resend.jsonl"
COURIER = ("bench_courier_source", "bench_courier_warehouse",
           ("totesys-etl-bench-courier-ingested", "totesys-etl-bench-courier-processed"))
_STATUSES = ("collected", "in_transit", "delivered", "failed")


def write_file(path: Path, megabytes: float) -> int:
    """A JSON Lines file of delivery events of about `megabytes` MB; the events written."""
    limit, size, n = int(megabytes * 1024 * 1024), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < limit:
            lines = []
            for i in range(n, n + 10_000):
                lines.append(f'{{"event_id": "BEN-{i:012d}", "sales_order_id": {i % 1_000_000 + 1}, '
                             f'"status": "{_STATUSES[i % 4]}", "at": "2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T'
                             f'{i % 24:02d}:{i % 60:02d}:{i % 59:02d}.{i % 999_999:06d}Z", "city": "City {i % 97}", '
                             f'"courier": "Courier {i % 5}"}}\n')
            text = "".join(lines)
            f.write(text)
            size += len(text.encode())
            n += len(lines)
    return n


def courier_bench(svc: Services, megabytes: float, workdir: Path, log_path: Path, run_stage) -> dict:
    """The `courier` figure; `run_stage` is bench.run's (a handler in a process of its own)."""
    pipeline = Pipeline(*COURIER)
    prepare(svc, pipeline)
    fresh_buckets(svc, (LANDING,))
    env = {**pipeline.env(svc), "TOTESYS_LANDING_BUCKET": LANDING}
    path = workdir / "courier-bench.jsonl"
    try:
        events = write_file(path, megabytes)
        size = path.stat().st_size
        s3 = boto3.client("s3", endpoint_url=svc.aws["AWS_ENDPOINT_URL"], region_name=svc.aws["AWS_DEFAULT_REGION"],
                          aws_access_key_id=svc.aws["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=svc.aws["AWS_SECRET_ACCESS_KEY"])
        s3.upload_file(str(path), LANDING, KEY)
    finally:
        if path.exists():
            os.remove(path)
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": LANDING}, "object": {"key": KEY}}}]}
    outcomes = {"ingest": run_stage("ingest", env, event, log_path),
                "process": run_stage("process", env, {}, log_path),
                "load": run_stage("load", env, {}, log_path)}
    ingested = sum(r["rows"].get("delivery_event", 0) for r in outcomes["ingest"]["result"]["runs"])
    if ingested != events:
        raise BenchFailed(f"the courier file held {events:,} events, the ingest took {ingested:,}")
    return {"file_mb": round(size / 1024 / 1024, 1), "events": events,
            "handler_s": {s: o["handler_s"] for s, o in outcomes.items()},
            "events_per_s": {s: round(events / o["handler_s"]) for s, o in outcomes.items()},
            "peak_rss_mb": {s: o["peak_rss_mb"] for s, o in outcomes.items()},
            "peak_tmp_mb": {s: o["peak_tmp_mb"] for s, o in outcomes.items()}}
