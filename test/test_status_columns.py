"""`status` names what the newest totesys run found of the source's columns (contract §2 "Schema changes")."""
from __future__ import annotations

import json

import boto3

from totesys_etl import lake, status

RUNS = ("20261201T000000000001Z", "20261201T000000000002Z", "20261201T000000000003Z", "20261201T000000000004Z")


def _put(bucket: str, run_id: str, body) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=lake.manifest_key(run_id),
                                  Body=body if isinstance(body, bytes) else json.dumps(body).encode())


def test_the_newest_totesys_run_names_stopped_tables_and_new_columns_in_either_mode(buckets):
    bucket = buckets[0]
    assert status.source_columns(bucket) is None
    _put(bucket, RUNS[0], {"run_id": RUNS[0], "stage": "ingest", "files": {},
                           "stopped": {"staff": {"missing": ["email_address"], "since": None},
                                       "design": "junk", "address": {"missing": [3]}},
                           "new_columns": {"design": ["colour"], "payment": "x"}})
    _put(bucket, RUNS[1], {"run_id": RUNS[1], "stage": "ingest", "source": "courier", "files": {}})
    _put(bucket, RUNS[2], b"{not json")
    found = status.source_columns(bucket)
    assert found == {"run_id": RUNS[0], "stopped": {"staff": ["email_address"]}, "new_columns": {"design": ["colour"]}}
    assert status._columns_line(found) == ("staff stopped, lacking email_address (source_schema_changed); "
                                           "new, ignored: design.colour")
    _put(bucket, RUNS[3], {"run_id": RUNS[3], "stage": "ingest", "files": {}, "source_mode": "cdc",
                           "cdc_stopped": {"department": ["location"]}})
    found = status.source_columns(bucket)
    assert found["stopped"] == {"department": ["location"]} and found["new_columns"] == {}
    assert status._columns_line({"stopped": {}, "new_columns": {}}) == "as declared"
