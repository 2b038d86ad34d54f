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


def _handler_run(stage: str, event: dict, crash_at: str | None) -> tuple[int, list[dict]]:
    """A handler in a process of its own, as Lambda runs it: its exit status and its JSON log lines."""
    env = {**os.environ, **({"TOTESYS_CRASH_AT": crash_at} if crash_at else {})}
    code = (f"import json, sys; from totesys_etl.{stage}.handler import lambda_handler; "
            "lambda_handler(json.loads(sys.argv[1]), None)")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(event)], env=env, capture_output=True,
                          timeout=120)
    lines = [json.loads(line) for line in done.stderr.decode().splitlines() if line.startswith("{")]
    return done.returncode, lines


def _handler_in_subprocess(stage: str, event: dict, crash_at: str | None) -> int:
    return _handler_run(stage, event, crash_at)[0]


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


#: A file with good and bad events, and a file that is not JSON: what a take quarantines.
HELD_BACK = {"held.json": ([event(600, 600), event(601, 601)],
                           as_array([event(600, 600), {"event_id": "x"}, event(601, 601),
                                     {**event(602), "status": "lost"}])),
             "garbage.json": ([], b"PK\x03\x04 a zip, not JSON")}


def _quarantined_once(key: str, processed_bucket: str) -> None:
    """`totesys-etl quarantine` lists the file's bad events (or the whole file) once, and status counts them once."""
    from totesys_etl.status import status

    held = quarantine.listed(processed_bucket)
    whole = not HELD_BACK[key][0]
    assert [(h.key, h.kind, h.rows) for h in held] == \
        [(key, quarantine.QUARANTINED_FILE, None) if whole else (key, quarantine.QUARANTINED_ROWS, 2)]
    kind = quarantine.QUARANTINED_FILE if whole else quarantine.QUARANTINED_ROWS
    assert status().quarantined == {kind: {"entries": 1, "rows": None if whole else 2}}


@pytest.mark.slow
@pytest.mark.parametrize("point, key", [("ingest.before_manifest", "held.json"),
                                        ("ingest.after_manifest", "held.json"),
                                        ("ingest.after_manifest", "garbage.json")])
def test_a_crash_after_the_quarantine_then_a_rerun_quarantines_each_bad_event_once(
        point, key, landing, pipeline_env, run_sql, logs):
    """The take quarantines before its manifest (nothing lost); the rerun takes the file again and must
    not quarantine it a second time: one listing entry, one status count, one ERROR line."""
    from totesys_etl.logs import StageLog

    good, body = HELD_BACK[key]
    drop(landing, key, body)
    code, lines = _handler_run("ingest", created(landing, key), point)
    assert code == 137
    assert len(quarantine.listed(pipeline_env["TOTESYS_PROCESSED_BUCKET"])) == 1  # written before the crash
    errors = [line for line in lines if line["level"] == "ERROR"]
    code, lines = _handler_run("ingest", created(landing, key), None)  # the event replayed
    assert code == 0
    errors += [line for line in lines if line["level"] == "ERROR"]
    assert courier.sweep(Settings.from_env(), StageLog("ingest")) == []  # the scheduled sweep: taken already
    errors += [line for line in logs if line["level"] == "ERROR"]
    assert [(e["error_kind"], e["key"]) for e in errors] == \
        [("quarantined_rows" if good else "quarantined_file", key)]
    process_and_load()
    _quarantined_once(key, pipeline_env["TOTESYS_PROCESSED_BUCKET"])
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter(expected_row(e) for e in good)


@pytest.mark.parametrize("key", sorted(HELD_BACK))
def test_a_retry_after_a_run_id_collision_quarantines_once(key, landing, pipeline_env, run_sql, monkeypatch):
    """The first take's run id is another run's (its manifest exists): it stops before anything is
    written (no record, quarantine, manifest or marker), so the file's bad events never go under
    the other file's run; the retry, under a new run id, quarantines them there, once."""
    from totesys_etl.logs import StageLog

    settings = Settings.from_env()
    good, body = HELD_BACK[key]
    obj = courier.Landed(key, drop(landing, key, body))
    taken = lake.run_id_at(datetime.now(timezone.utc) - timedelta(seconds=1))
    manifests.write(settings.ingest_bucket, manifests.courier_manifest(
        taken, {"bucket": landing, "key": "other.json", "etag": "0"}, {}, {}, []))
    with monkeypatch.context() as clock:
        clock.setattr(lake, "run_id_at", lambda when: taken)
        with pytest.raises(courier.RunIdCollision):
            courier.take(settings, obj, StageLog("ingest"))
    assert quarantine.listed(settings.processed_bucket) == []
    retry = courier.take(settings, obj, StageLog("ingest"))
    assert retry is not None and retry.run_id != taken
    assert {held.run_id for held in quarantine.listed(settings.processed_bucket)} == {retry.run_id}
    assert courier.take(settings, obj, StageLog("ingest")) is None  # taken now
    process_and_load()
    _quarantined_once(key, settings.processed_bucket)
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter(expected_row(e) for e in good)


def test_two_takes_of_a_file_with_bad_events_at_once_quarantine_it_once(
        landing, pipeline_env, run_sql, logs, monkeypatch):
    """The S3 event and the sweep take one file at once: the second runs whole while the first is
    between its quarantine and its manifest. Two runs carry the events (each loads once); the bad
    events are quarantined, and alarmed, once."""
    from totesys_etl.logs import StageLog

    settings = Settings.from_env()
    good, body = HELD_BACK["held.json"]
    obj = courier.Landed("held.json", drop(landing, "held.json", body))
    second, write = [], manifests.write

    def the_other_take_first(bucket, manifest):
        if not second:
            second.append(None)  # the other take's own manifest write goes straight through
            second[0] = courier.take(settings, obj, StageLog("ingest"))
        return write(bucket, manifest)

    with monkeypatch.context() as race:
        race.setattr(manifests, "write", the_other_take_first)
        first = courier.take(settings, obj, StageLog("ingest"))
    assert first is not None and second[0] is not None and first.run_id != second[0].run_id
    assert first.quarantined == second[0].quarantined == 2
    process_and_load()
    _quarantined_once("held.json", settings.processed_bucket)
    assert [line["error_kind"] for line in logs if line["level"] == "ERROR"] == ["quarantined_rows"]
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter(expected_row(e) for e in good)
    run_ids = {r[0] for r in run_sql(pipeline_env["TOTESYS_WAREHOUSE_URL"], "SELECT etl_run_id FROM fact_delivery")}
    assert run_ids == {first.run_id}  # the first run loaded carries them all; the second changes nothing


def test_a_take_that_missed_the_marker_finds_the_finished_run_and_writes_no_other(landing, pipeline_env, run_sql,
                                                                                  monkeypatch):
    """The S3 event and the sweep both looked for the marker before either wrote it, and the second
    starts once the first has its manifest (as a retry after a crash between manifest and marker
    does): the first take's record names a run of this very file, so the second only marks it taken."""
    from totesys_etl.logs import StageLog

    events = [event(n, n) for n in range(1, 40)]
    etag = drop(landing, "raced.json", as_array(events))
    settings = Settings.from_env()
    with monkeypatch.context() as race:
        race.setattr(courier, "is_taken", lambda settings, obj: False)  # both checked before either marked
        runs = [courier.take(settings, courier.Landed("raced.json", etag), StageLog("ingest")) for _ in range(2)]
    assert runs[0] is not None and runs[0].rows == {"delivery_event": 39} and runs[1] is None
    assert lake.runs_after(settings.ingest_bucket, None) == [runs[0].run_id]
    assert courier.is_taken(settings, courier.Landed("raced.json", etag))
    process_and_load()
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter(expected_row(e) for e in events)


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


def test_an_earlier_take_s_hostile_reason_file_neither_stops_the_file_nor_enters_its_manifest(
        landing, pipeline_env, run_sql):
    """The record names an earlier take, and a reason file is at that take's quarantine key: a retry
    only looks for it (its content is not read), lists what it found itself, and the file loads. A
    17 MiB reason file with `rows` not a number used to stop every retry before its marker."""
    from totesys_etl.logs import StageLog

    settings = Settings.from_env()
    good, body = HELD_BACK["held.json"]
    obj = courier.Landed("held.json", drop(landing, "held.json", body))
    earlier = lake.run_id_at(datetime.now(timezone.utc) - timedelta(seconds=1))
    s3_adapter.put_json_create_only(settings.ingest_bucket, courier.first_take_key(landing, obj.key, obj.etag),
                                    {"run_id": earlier, "bucket": landing, "key": obj.key, "etag": obj.etag})
    target = quarantine.rows_key(earlier, courier.quarantine_name(obj.key))
    boto3.client("s3").put_object(Bucket=settings.processed_bucket, Key=f"{target}{quarantine.REASON_SUFFIX}",
                                  Body=b'{"rows": "x", "reason": "' + b"y" * (17 << 20) + b'"}')
    result = courier.take(settings, obj, StageLog("ingest"))
    assert result is not None and result.quarantined == 2
    listed = manifests.read_if_present(settings.ingest_bucket, result.run_id)["quarantined"]
    assert [(e["rows"], e["quarantine_key"], e["error_kind"]) for e in listed] == \
        [(2, target, quarantine.QUARANTINED_ROWS)]
    process_and_load()
    assert stored(run_sql, pipeline_env["TOTESYS_WAREHOUSE_URL"]) == Counter(expected_row(e) for e in good)


def test_the_error_is_logged_before_the_reason_file_so_a_crash_between_loses_no_alarm(
        landing, pipeline_env, monkeypatch, logs):
    """The reason file says "quarantined, all there", and a retry that finds it does not alarm again:
    so the ERROR goes first. A take that fails writing the reason file has alarmed already, and its
    retry (finding no reason file) quarantines and alarms again: twice, never none."""
    from totesys_etl.logs import StageLog

    settings = Settings.from_env()
    obj = courier.Landed("held.json", drop(landing, "held.json", HELD_BACK["held.json"][1]))
    put = s3_adapter.put_json_create_only

    def no_reason_file(bucket, key, document):
        if key.endswith(quarantine.REASON_SUFFIX):
            raise OSError("killed before the reason file")
        return put(bucket, key, document)

    def alarms() -> list[str]:
        return [line["error_kind"] for line in logs if line["level"] == "ERROR"]

    with monkeypatch.context() as crash:
        crash.setattr(s3_adapter, "put_json_create_only", no_reason_file)
        with pytest.raises(OSError):
            courier.take(settings, obj, StageLog("ingest"))
    assert alarms() == [quarantine.QUARANTINED_ROWS]
    assert courier.take(settings, obj, StageLog("ingest")) is not None
    assert alarms() == [quarantine.QUARANTINED_ROWS] * 2
    _quarantined_once("held.json", settings.processed_bucket)
