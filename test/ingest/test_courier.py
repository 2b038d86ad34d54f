"""Courier files (issue 29, contract §9) through the real handlers: landed objects, the ingest handler
(S3 events and the sweep), the processor and the loader, against moto's server and PostgreSQL.

Every test compares `fact_delivery` with the valid events it dropped: each exactly once.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import quote_plus

import boto3
import pytest

from totesys_etl import lake, quarantine
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3 as s3_adapter
from totesys_etl.config import Settings
from totesys_etl.ingest import courier
from totesys_etl.ingest.handler import lambda_handler as ingest_handler
from totesys_etl.load.handler import lambda_handler as load_handler
from totesys_etl.process.handler import lambda_handler as process_handler
from totesys_etl.schema.courier import DELIVERY_STATUSES


def event(n: int, order: int = 1, status: str | None = None, at: str | None = None, **extra) -> dict:
    """A valid courier event, numbered `n` (its event_id), text with commas, quotes and a newline."""
    return {"event_id": f"ev-{n:06d}", "sales_order_id": order, "status": status or DELIVERY_STATUSES[n % 4],
            "at": at or f"2024-03-{n % 28 + 1:02d}T{n % 24:02d}:15:30.{n % 1000:03d}Z",
            "city": "Zürich, \"Nord\"\nQuay" if n % 5 == 0 else f"City {n % 7}", "courier": f"Courier {n % 3}",
            **extra}


def as_array(events: list) -> bytes:
    return json.dumps(events, ensure_ascii=False).encode()


def as_lines(events: list) -> bytes:
    return "\n".join(json.dumps(e, ensure_ascii=False) for e in events).encode() + b"\n"


def expected_row(e: dict) -> tuple:
    at = datetime.fromisoformat(e["at"][:-1])
    return (e["event_id"], e["sales_order_id"], e["status"], at.date(), at.time(), e["city"], e["courier"])


@pytest.fixture
def landing(pipeline_env, landing_bucket):
    """A landing bucket beside the pipeline's two (the pipeline's settings first, then this one)."""
    return landing_bucket


def drop(bucket: str, key: str, body: bytes) -> str:
    """Put an object as a courier would; its ETag."""
    return boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')


def created(bucket: str, *keys: str) -> dict:
    """The S3 `ObjectCreated` event Lambda receives, keys URL-encoded as S3 sends them."""
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(k)}}} for k in keys]}


def process_and_load() -> None:
    process_handler({}, None)
    load_handler({}, None)


def stored(run_sql, url: str) -> Counter:
    return Counter(tuple(r) for r in run_sql(url, "SELECT event_id, sales_order_id, status, event_date, event_time, "
                                                  "city, courier FROM fact_delivery"))


def test_arrays_lines_and_gzip_of_several_sizes_load_every_event_once(landing, pipeline_env, run_sql):
    """Files from one event to tens of thousands, each format: each file is one run, each event one row."""
    files = {"a/one.json": (as_array, [event(1)]),
             "a/lines.jsonl": (as_lines, [event(n) for n in range(2, 300)]),
             "b/big.json.gz": (lambda e: gzip.compress(as_array(e)), [event(n, n) for n in range(300, 30_300)]),
             "b/lines.gz": (lambda e: gzip.compress(as_lines(e)), [event(n) for n in range(30_300, 30_400)]),
             "empty-array.json": (as_array, [])}
    for key, (encode, events) in files.items():
        drop(landing, key, encode(events))
    result = ingest_handler(created(landing, *files), None)
    assert len(result["runs"]) == len(files)
    assert sum(r["rows"].get("delivery_event", 0) for r in result["runs"]) == 30_399
    process_and_load()
    want = Counter(expected_row(e) for _, events in files.values() for e in events)
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == want
    dates = run_sql(pipeline_env["TOTESYS_WAREHOUSE_URL"],
                    "SELECT count(*) FROM fact_delivery f WHERE NOT EXISTS "
                    "(SELECT 1 FROM dim_date d WHERE d.date_id = f.event_date)")
    assert dates == [[0]]


def test_a_file_twice_under_two_names_a_repeated_event_and_a_replayed_event_load_once(
        landing, pipeline_env, run_sql):
    events = [event(n) for n in range(1, 50)]
    repeated = [*events, events[3], events[3]]
    drop(landing, "first.json", as_array(repeated))
    drop(landing, "copy-of-first.jsonl", as_lines(events))
    first = ingest_handler(created(landing, "first.json", "copy-of-first.jsonl"), None)
    assert len(first["runs"]) == 2
    replay = ingest_handler(created(landing, "first.json"), None)  # the same event again: already taken
    assert replay["runs"] == []
    process_and_load()
    url = pipeline_env["TOTESYS_WAREHOUSE_URL"]
    before = run_sql(url, "SELECT delivery_record_id, event_id, etl_run_id, xmin::text FROM fact_delivery ORDER BY 1")
    assert stored(run_sql, url) == Counter(expected_row(e) for e in events)
    # A third name carrying an event already stored, plus a new one: only the new one is inserted.
    drop(landing, "resent.jsonl", as_lines([events[0], event(99)]))
    ingest_handler(created(landing, "resent.jsonl"), None)
    process_and_load()
    process_and_load()  # a sweep again changes nothing
    after = run_sql(url, "SELECT delivery_record_id, event_id, etl_run_id, xmin::text FROM fact_delivery ORDER BY 1")
    assert after[:len(before)] == before
    assert [r[1] for r in after[len(before):]] == ["ev-000099"]
    assert after[-1][0] == before[-1][0] + 1  # a replay drew no serial value


def test_bad_events_are_held_back_alone_with_their_reason(landing, pipeline_env, run_sql, logs):
    good = [event(n) for n in range(1, 20)]
    bad = [{**event(100), "status": "lost"}, {**event(101), "sales_order_id": "12"}, {**event(102), "at": "yesterday"},
           {k: v for k, v in event(103).items() if k != "courier"}, [1, 2],
           {**event(104), "at": "2024-02-30T10:00:00Z"},
           {**event(105), "sales_order_id": True}, {**event(106), "city": "nul\x00"}, {**event(107), "event_id": " "},
           {**event(108), "sales_order_id": 2 ** 31}, {**event(109), "event_id": "x" * 3000},
           {**event(110), "courier": "lone \ud800 surrogate"}]
    drop(landing, "mixed.json", json.dumps([*good[:10], *bad, *good[10:]]).encode())  # \ud800 as an escape
    lines = as_lines(good[:3]) + b"{not json\n\xff\xfe\n" + as_lines([bad[0]])
    drop(landing, "mixed.jsonl", lines)
    result = ingest_handler(created(landing, "mixed.json", "mixed.jsonl"), None)
    assert [r["quarantined"] for r in result["runs"]] == [len(bad), 3]
    process_and_load()
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter(expected_row(e) for e in good)
    held = {h.key: h for h in quarantine.listed(pipeline_env["TOTESYS_PROCESSED_BUCKET"])}
    assert set(held) == {"mixed.json", "mixed.jsonl"}
    assert held["mixed.json"].rows == len(bad) and held["mixed.json"].kind == quarantine.QUARANTINED_ROWS
    for reason in ("status is not one of", "sales_order_id is not an integer", "at is not YYYY-MM-DD",
                   "courier is missing", "not a JSON object", "NUL character", "event_id is empty", "out of range",
                   "event_id is longer than 256", "lone surrogate"):
        assert reason in held["mixed.json"].reason
    assert "not JSON" in held["mixed.jsonl"].reason and "not UTF-8" in held["mixed.jsonl"].reason
    errors = [line for line in logs if line["level"] == "ERROR"]
    assert [(e["error_kind"], e["key"], e["rows"]) for e in errors] == [("quarantined_rows", "mixed.json", len(bad)),
                                                                        ("quarantined_rows", "mixed.jsonl", 3)]
    text = s3_adapter.get_bytes(pipeline_env["TOTESYS_PROCESSED_BUCKET"],
                                quarantine.rows_key(held["mixed.json"].run_id, "mixed.json")).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(float(r["etl_row"])) for r in rows] == list(range(11, 11 + len(bad)))
    assert json.loads(rows[0]["event"]) == bad[0] and rows[0]["etl_reason"].startswith("status is not one of")


def test_a_file_that_is_not_json_is_quarantined_whole_and_alarms(landing, pipeline_env, run_sql, logs):
    drop(landing, "garbage.json", b"PK\x03\x04 this is a zip, not JSON")
    drop(landing, "broken.json.gz", gzip.compress(as_array([event(1), event(2)]))[:-12])
    drop(landing, "cut.json", as_array([event(3), event(4)])[:-40])
    drop(landing, "fine.json", as_array([event(5)]))
    result = ingest_handler(created(landing, "garbage.json", "broken.json.gz", "cut.json", "fine.json"), None)
    assert len(result["runs"]) == 4
    process_and_load()
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter([expected_row(event(5))])
    held = {h.key: h for h in quarantine.listed(pipeline_env["TOTESYS_PROCESSED_BUCKET"])}
    assert set(held) == {"garbage.json", "broken.json.gz", "cut.json"}
    assert all(h.kind == quarantine.QUARANTINED_FILE and h.rows is None for h in held.values())
    copy = quarantine.quarantine_key(held["garbage.json"].run_id, "garbage.json")
    assert s3_adapter.get_bytes(pipeline_env["TOTESYS_PROCESSED_BUCKET"], copy).startswith(b"PK")
    kinds = [line.get("error_kind") for line in logs if line["level"] == "ERROR"]
    assert kinds == ["quarantined_file"] * 3
    assert s3_adapter.exists(landing, "garbage.json")  # the landing bucket is never written to


def test_an_object_removed_before_it_is_read_is_skipped_without_failing(landing, pipeline_env, logs):
    drop(landing, "gone.json", as_array([event(1)]))
    boto3.client("s3").delete_object(Bucket=landing, Key="gone.json")
    assert ingest_handler(created(landing, "gone.json"), None)["runs"] == []
    settings = Settings.from_env()
    # Listed, then removed before its GET: the exact version asked for is gone.
    etag = drop(landing, "later.json", as_array([event(2)]))
    boto3.client("s3").put_object(Bucket=landing, Key="later.json", Body=as_array([event(3)]))
    from totesys_etl.logs import StageLog
    assert courier.take(settings, courier.Landed("later.json", etag), StageLog("ingest")) is None
    warnings = [line["message"] for line in logs if line["level"] == "WARNING"]
    assert len(warnings) == 2 and "removed or replaced before it was read" in warnings[1]
    assert not [line for line in logs if line["level"] == "ERROR"]
    assert not courier.is_taken(settings, courier.Landed("later.json", etag))


def test_the_sweep_takes_what_no_event_named_and_moves_its_mark(landing, pipeline_env, run_sql, source):
    from totesys_etl.logs import StageLog

    settings = Settings.from_env()
    for n in range(5):
        drop(landing, f"drop/{n}.json", as_array([event(n * 10 + k) for k in range(3)]))
    ingest_handler(created(landing, "drop/0.json"), None)
    taken = courier.sweep(settings, StageLog("ingest"))
    assert len(taken) == 4  # the one the event took is not taken again
    assert courier.sweep(settings, StageLog("ingest")) == []
    mark = lake.read_mark(settings.ingest_bucket, courier.MARK_PREFIX)
    assert mark is not None and mark <= lake.run_id_at(datetime.now(timezone.utc) - courier.LANDING_SETTLE)
    # Past the settle period, the mark passes them: a sweep then reads no marker for them at all.
    later = datetime.now(timezone.utc) + courier.LANDING_SETTLE + timedelta(minutes=1)
    assert courier.sweep(settings, StageLog("ingest"), now=later) == []
    assert lake.read_mark(settings.ingest_bucket, courier.MARK_PREFIX) > mark
    process_and_load()
    assert sum(stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]).values()) == 15


def test_courier_runs_are_never_the_totesys_ingests_previous_run(landing, pipeline_env, logs):
    """ingest/watermark.py skips a courier manifest quietly: no warning, not quarantined, not the watermark."""
    from totesys_etl.ingest.watermark import previous_watermark
    from totesys_etl.logs import StageLog

    bucket = pipeline_env["TOTESYS_INGEST_BUCKET"]
    totesys_run = lake.run_id_at(datetime.now(timezone.utc) - timedelta(minutes=5))
    manifests.write(bucket, manifests.ingest_manifest(totesys_run, None, {"snapshot": "10:10:", "cutoff":
                                                                          "2024-01-01 00:00:00.000000"}, {}, {}))
    drop(landing, "x.json", as_array([event(1)]))
    ingest_handler(created(landing, "x.json"), None)
    del logs[:]
    assert previous_watermark(bucket, StageLog("ingest")).run_id == totesys_run
    assert not [line for line in logs if line["level"] != "INFO"]


def _handler_in_subprocess(stage: str, event: dict, crash_at: str | None) -> int:
    env = {**os.environ, **({"TOTESYS_CRASH_AT": crash_at} if crash_at else {})}
    code = (f"import json, sys; from totesys_etl.{stage}.handler import lambda_handler; "
            "lambda_handler(json.loads(sys.argv[1]), None)")
    return subprocess.run([sys.executable, "-c", code, json.dumps(event)], env=env, capture_output=True,
                          timeout=120).returncode


@pytest.mark.slow
@pytest.mark.parametrize("point", ["ingest.before_manifest", "ingest.after_manifest", "process.before_manifest",
                                   "process.after_manifest", "load.before_commit", "load.after_commit"])
def test_a_crash_at_each_fault_point_then_a_rerun_loads_every_event_once(
        point, landing, pipeline_env, totesys, run_sql):
    events = [event(n, n) for n in range(1, 200)]
    drop(landing, "crash.jsonl.gz", gzip.compress(as_lines(events)))
    drop(landing, "bad-one.json", as_array([event(500), {"event_id": "x"}]))
    stage = point.split(".")[0]
    steps = [("ingest", created(landing, "crash.jsonl.gz", "bad-one.json")), ("process", {}), ("load", {})]
    for name, ev in steps:
        code = _handler_in_subprocess(name, ev, point if name == stage else None)
        assert code == (137 if name == stage else 0), (name, code)
        if name == stage:
            break
    # The rerun: an S3 event replayed and every stage swept, as the next tick would.
    for name, ev in [("ingest", created(landing, "crash.jsonl.gz", "bad-one.json")), ("ingest", {}),
                     ("process", {}), ("load", {}), ("process", {}), ("load", {})]:
        assert _handler_in_subprocess(name, ev, None) == 0, name
    want = Counter(expected_row(e) for e in [*events, event(500)])
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == want


def test_an_object_taken_twice_at_once_still_loads_each_event_once(landing, pipeline_env, run_sql, monkeypatch):
    """The S3 event and the sweep both looked before either wrote the marker: two runs of one file."""
    from totesys_etl.logs import StageLog

    events = [event(n, n) for n in range(1, 40)]
    etag = drop(landing, "raced.json", as_array(events))
    settings = Settings.from_env()
    with monkeypatch.context() as race:
        race.setattr(courier, "is_taken", lambda settings, obj: False)  # both checked before either marked
        runs = [courier.take(settings, courier.Landed("raced.json", etag), StageLog("ingest")) for _ in range(2)]
    assert runs[0].run_id != runs[1].run_id and runs[0].rows == runs[1].rows == {"delivery_event": 39}
    assert courier.is_taken(settings, courier.Landed("raced.json", etag))
    process_and_load()
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter(expected_row(e) for e in events)
    run_ids = {r[0] for r in run_sql(pipeline_env["TOTESYS_WAREHOUSE_URL"], "SELECT etl_run_id FROM fact_delivery")}
    assert run_ids == {runs[0].run_id}  # the first run loaded carries them all; the second changes nothing


def test_a_landing_key_too_long_to_prefix_is_quarantined_under_its_hash(landing, pipeline_env, run_sql):
    """S3 keys hold 1,024 bytes: `quarantine/<run_id>/<key>.rows.csv.reason.json` must still fit."""
    long_key = "partner/" + "k" * 1000
    drop(landing, long_key + "1", as_array([event(1), {"event_id": "bad"}]))
    drop(landing, long_key + "2", b"not json at all")
    result = ingest_handler(created(landing, long_key + "1", long_key + "2"), None)
    assert [r["quarantined"] for r in result["runs"]] == [1, 1]
    held = quarantine.listed(pipeline_env["TOTESYS_PROCESSED_BUCKET"])
    assert sorted(h.kind for h in held) == ["quarantined_file", "quarantined_rows"]
    assert all(h.key.startswith("long-landing-key/") for h in held if h.kind == "quarantined_rows")
    manifest = manifests.read(pipeline_env["TOTESYS_INGEST_BUCKET"], result["runs"][0]["run_id"])
    assert manifest["landing"]["key"] == long_key + "1"
    process_and_load()
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter([expected_row(event(1))])


def test_no_hostile_file_fails_a_second_run(landing, pipeline_env, totesys, run_sql, logs, monkeypatch):
    """Issue 39: deep nesting, an over-size event and a bomb (more than TOTESYS_LANDING_MAX_BYTES
    decompressed) are each quarantined whole at once with the reason they earned, never logged as a
    failure; the next scheduled run takes nothing again and logs no ERROR. A good file beside them loads."""
    monkeypatch.setenv("TOTESYS_LANDING_MAX_BYTES", str(4 << 20))
    hostile = {"deep.json": b"[" * 200_000,
               "deep-lines.jsonl": b'{"a": ' + b"[" * 200_000 + b"\n",
               "huge-event.jsonl": b'{"event_id": "e", "t": "' + b"x" * (3 << 20) + b'"}\n',
               "bomb.json.gz": gzip.compress(b"[" + b" " * (8 << 20) + b"]", 9)}
    reasons = {"deep.json": "nested too deep", "deep-lines.jsonl": "nested too deep",
               "huge-event.jsonl": "the line is 3,145,754 bytes", "bomb.json.gz": "more than 4,194,304 bytes"}
    for key, body in hostile.items():
        drop(landing, key, body)
    drop(landing, "good.json", as_array([event(1)]))
    first = ingest_handler({}, None)
    assert len(first["courier"]) == len(hostile) + 1
    held = {h.key: h for h in quarantine.listed(pipeline_env["TOTESYS_PROCESSED_BUCKET"])}
    assert set(held) == set(hostile)
    for key, reason in reasons.items():
        assert held[key].kind == quarantine.QUARANTINED_FILE and reason in held[key].reason, held[key].reason
    errors = [line for line in logs if line["level"] == "ERROR"]
    assert sorted((e["error_kind"], e["key"]) for e in errors) == sorted(("quarantined_file", k) for k in hostile)
    del logs[:]
    second = ingest_handler({}, None)
    assert second["courier"] == [] and not [line for line in logs if line["level"] == "ERROR"]
    process_and_load()
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter([expected_row(event(1))])
