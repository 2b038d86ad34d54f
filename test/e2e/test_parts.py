"""A first load in parts (contract §4 "Parts", issue 38) through `totesys-etl tick`: the ingest
splits the big tables, the processor's parts run in child processes (the local fan-out), and the
warehouse reconciles clean with the source, then again after changes."""
from __future__ import annotations

import json

import boto3
import pytest

from totesys_etl import lake
from totesys_etl.local.source.simulate import simulate

pytestmark = pytest.mark.slow

PART_ROWS = "60"


def _manifest(bucket: str, run_id: str) -> dict:
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=lake.manifest_key(run_id))["Body"].read())


def test_a_first_load_in_parts_reconciles_clean(seeded, new_pipeline, compare):
    """The same source through a pipeline in parts and one without: the same warehouse rows, which
    are what the independent oracle computes, and reconcile clean."""
    pipeline, clean = new_pipeline("parts"), new_pipeline("whole")
    extra = {"TOTESYS_PART_ROWS": PART_ROWS, "TOTESYS_FANOUT_WORKERS": "2"}
    pipeline.tick(extra=extra)
    (first,) = pipeline.run_ids()
    ingested = _manifest(pipeline.ingest_bucket, first)["files"]
    assert len(ingested["sales_order"]["parts"]) == 4  # 200 orders, 60 rows a part, split by key range
    processed = _manifest(pipeline.processed_bucket, first)["files"]
    assert len(processed["fact_sales_order"]["parts"]) == 4
    assert processed["fact_sales_order"]["rows"] == ingested["sales_order"]["rows"] == 200
    reconciled = pipeline.command("reconcile")
    assert reconciled.returncode == 0, reconciled.stdout[-3000:]

    clean.tick()
    compare("parts: first load", pipeline, clean)

    simulate(pipeline.source_url, changes=40, seed=5)
    pipeline.tick(extra=extra)
    reconciled = pipeline.command("reconcile")
    assert reconciled.returncode == 0, reconciled.stdout[-3000:]
    clean.tick()
    compare("parts: after changes", pipeline, clean)
