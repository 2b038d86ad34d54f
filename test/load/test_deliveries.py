"""Courier events through the real ingest, processor and loader: an event two runs carry with
different values ends as an in-order load leaves it, whichever run is loaded first (contract §3)."""
from __future__ import annotations

import json
from datetime import datetime

import boto3
import pytest

from totesys_etl.config import Settings
from totesys_etl.ingest.handler import lambda_handler as ingest_handler
from totesys_etl.load.run import load
from totesys_etl.process.handler import lambda_handler as process_handler

pytestmark = pytest.mark.slow


def event(n: int, city: str) -> dict:
    return {"event_id": f"ev-{n:06d}", "sales_order_id": 1, "status": "delivered",
            "at": f"2024-03-0{n}T10:15:30Z", "city": city, "courier": "Courier 1"}


def expected_row(e: dict) -> tuple:
    at = datetime.fromisoformat(e["at"][:-1])
    return (e["event_id"], e["sales_order_id"], e["status"], at.date(), at.time(), e["city"], e["courier"])


def take(landing: str, key: str, events: list) -> str:
    """Land a courier file and take it as its S3 event would: its run id."""
    body = "\n".join(json.dumps(e) for e in events).encode()
    boto3.client("s3").put_object(Bucket=landing, Key=key, Body=body)
    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": landing}, "object": {"key": key}}}
    return ingest_handler({"Records": [record]}, None)["runs"][0]["run_id"]


def _two_runs(landing: str) -> tuple[str, str, dict, dict]:
    """Runs R1 < R2 carrying event 1 with different cities (a courier's correction), and event 2
    the same in both; each processed, none loaded. Returns R1, R2 and each run's copy of event 1."""
    first, corrected = event(1, "Leeds"), event(1, "York")
    r1 = take(landing, "first.jsonl", [first, event(2, "Hull")])
    r2 = take(landing, "corrected.jsonl", [corrected, event(2, "Hull")])
    assert r1 < r2
    process_handler({}, None)
    return r1, r2, first, corrected


def _rows(run_sql, url: str) -> list:
    return run_sql(url, "SELECT delivery_record_id, event_id, sales_order_id, status, event_date, event_time, "
                        "city, courier, etl_run_id, xmin::text FROM fact_delivery ORDER BY event_id")


def test_an_event_two_runs_carry_differently_keeps_the_older_runs_values_in_either_order(
        landing_bucket, pipeline_env, run_sql):
    r1, r2, first, _ = _two_runs(landing_bucket)
    settings, url = Settings.from_env(), pipeline_env["TOTESYS_WAREHOUSE_URL"]
    load(settings, [r2])
    load(settings, [r1])  # the older run, loaded late: its values are the ones an in-order load keeps
    rows = _rows(run_sql, url)
    assert [(*r[1:8], r[8]) for r in rows] == [(*expected_row(first), r1), (*expected_row(event(2, "Hull")), r2)]
    load(settings, [r2])  # a replay of the newer run changes no row, xmin and surrogate keys included
    load(settings, [r1])  # nor does a replay of the older one
    assert _rows(run_sql, url) == rows


def test_an_event_two_runs_carry_differently_loaded_in_order_keeps_the_first(landing_bucket, pipeline_env, run_sql):
    r1, r2, first, _ = _two_runs(landing_bucket)
    settings, url = Settings.from_env(), pipeline_env["TOTESYS_WAREHOUSE_URL"]
    load(settings, [r1])
    rows = _rows(run_sql, url)
    load(settings, [r2])  # the later copy is skipped: no row is rewritten
    assert _rows(run_sql, url) == rows
    assert [(*r[1:8], r[8]) for r in rows] == [(*expected_row(first), r1), (*expected_row(event(2, "Hull")), r1)]
