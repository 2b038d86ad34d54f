import json

import pytest

from totesys_etl.errors import InvalidInput
from totesys_etl.events import PartRequest, S3Object, parse_event, part_event


def _record(bucket, key, name="ObjectCreated:Put"):
    return {"eventSource": "aws:s3", "eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def test_keys_are_url_decoded_slash_included():
    event = {"Records": [_record("b", "_runs%2F20261124T071248780573Z.json"), _record("b", "a+b%27c")]}
    assert parse_event(event).objects == (S3Object("b", "_runs/20261124T071248780573Z.json"), S3Object("b", "a b'c"))


def test_no_records_test_events_and_schedules_mean_sweep():
    for event in ({}, None, {"Records": []}, {"Event": "s3:TestEvent", "Bucket": "b"},
                  {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}):
        assert parse_event(event).sweep


def test_sqs_wrapped_events_and_junk_records():
    inner = {"Records": [_record("b", "k")]}
    event = {"Records": [{"eventSource": "aws:sqs", "body": json.dumps(inner)},
                         {"eventSource": "aws:sqs", "body": "not json"},
                         {"eventSource": "aws:sqs", "body": "[" * 50_000},  # RecursionError in json, not ValueError
                         _record("b", "removed", "ObjectRemoved:Delete"), "junk", {"eventName": "ObjectCreated:Put"}]}
    assert parse_event(event).objects == (S3Object("b", "k"),)


def test_records_that_name_nothing_to_do_are_not_a_sweep():
    invocation = parse_event({"Records": [_record("b", "x", "ObjectRemoved:Delete")]})
    assert invocation.objects == () and not invocation.sweep


def test_manifest_runs_keeps_this_bucket_s_manifests_once_in_order():
    event = {"Records": [_record("b", "_runs%2F20260101T000000000002Z.json"),
                         _record("b", "_runs/20260101T000000000001Z.json"),
                         _record("b", "_runs/20260101T000000000002Z.json"),
                         _record("other", "_runs/20260101T000000000003Z.json"), _record("b", "_runs/../x.json")]}
    runs, others = parse_event(event).manifest_runs("b")
    assert runs == ["20260101T000000000001Z", "20260101T000000000002Z"]
    assert others == [S3Object("other", "_runs/20260101T000000000003Z.json"), S3Object("b", "_runs/../x.json")]


def test_a_part_request_round_trips_and_is_neither_a_sweep_nor_objects():
    request = PartRequest("20261124T071248780573Z", "fact_sales_order", 12)
    invocation = parse_event(part_event(request))
    assert invocation.part == request and not invocation.sweep and invocation.objects == ()


@pytest.mark.parametrize("body", [
    None, "x", {"run_id": "2026", "table": "sales_order", "part": 0},
    {"run_id": "20261124T071248780573Z", "table": "sales_order; drop table x", "part": 0},
    {"run_id": "20261124T071248780573Z", "table": "sales_order", "part": True},
    {"run_id": "20261124T071248780573Z", "table": "sales_order", "part": -1},
    {"run_id": "20261124T071248780573Z", "table": "sales_order", "part": 100_000},
    {"run_id": "20261124T071248780573Z", "table": "sales_order"},
])
def test_a_malformed_part_request_is_one_line_of_invalid_input(body):
    with pytest.raises(InvalidInput, match="not a part request"):
        parse_event({"totesys_part": body})
