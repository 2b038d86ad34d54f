"""Exactly once, proven (issue 17): every fault point, SIGKILLs inside each stage, replayed events.

Each test runs a *faulted* pipeline and a *clean* one over the same source, ticking them at the
same source states (test/e2e/conftest.py), and then compares their warehouses table by table as
multisets of rows without surrogate keys. A crash whose run never got its ingest manifest never
happened (contract §4: until the manifest exists the run does not exist), so the clean pipeline ticks
where the faulted one's ingest took effect.
"""
import json
import random
import signal
import subprocess
import threading
import time
from urllib.parse import quote_plus

import boto3
import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.faults import POINTS
from totesys_etl.local.drive.notifications import queue_name
from totesys_etl.local.source.simulate import simulate

pytestmark = pytest.mark.slow


def change(source, seed: int, changes: int = 40) -> None:
    simulate(source.admin_url, changes=changes, seed=seed)


def test_a_crash_at_each_point_of_a_first_tick_then_a_rerun_equals_a_clean_run(seeded, new_pipeline, compare, tally,
                                                                               at_once):
    """Six pipelines, each crashed at one contract §6 point on its first tick, then rerun."""
    faulted = {point: new_pipeline(f"f{i}") for i, point in enumerate(POINTS)}
    clean = new_pipeline("c")
    crashed = at_once(clean.tick, *[_crash(p, point) for point, p in faulted.items()])[1:]
    for point, result in zip(POINTS, crashed):
        assert result.stdout == "", point  # ended at once: no summary, no sweep
        tally.fault(f"crash at {point}")
    at_once(*[p.tick for p in faulted.values()])
    clean_rows = clean.rows()
    for point, pipeline in faulted.items():
        compare(f"crash at {point} (first tick)", pipeline, clean, clean_rows=clean_rows)


def test_a_crash_at_each_point_of_a_later_tick_with_the_source_changed_before_the_rerun(
        seeded, new_pipeline, compare, tally, at_once, marks_move):
    """After a clean first load: change, crash at each point, change again, rerun.

    A run whose ingest manifest was never written does not exist, so its equivalent clean run
    ticks only after the second change ("clean, run lost"); every other crash left a run that a
    clean pipeline ticking at both source states matches.
    """
    faulted = {point: new_pipeline(f"f{i}") for i, point in enumerate(POINTS)}
    clean, clean_without = new_pipeline("c"), new_pipeline("n")
    at_once(clean.tick, clean_without.tick, *[p.tick for p in faulted.values()])
    change(seeded, seed=1)
    manifests = {point: p.manifests(p.ingest_bucket) for point, p in faulted.items()}
    at_once(clean.tick, *[_crash(p, point) for point, p in faulted.items()])
    for point, pipeline in faulted.items():
        tally.fault(f"crash at {point}")
        grew = len(pipeline.manifests(pipeline.ingest_bucket)) - len(manifests[point])
        assert grew == (0 if point == "ingest.before_manifest" else 1), point  # did the run come to exist?
    change(seeded, seed=2)
    at_once(clean.tick, clean_without.tick, *[p.tick for p in faulted.values()])
    clean_rows, without_rows = clean.rows(), clean_without.rows()
    assert clean_rows != without_rows  # the two histories differ, and the comparison can tell
    for point, pipeline in faulted.items():
        oracle = clean_without if point == "ingest.before_manifest" else clean
        compare(f"crash at {point} (later tick, source changed)", pipeline, oracle,
                clean_rows=without_rows if oracle is clean_without else clean_rows)
    assert faulted["load.before_commit"].command("reconcile").returncode == 0
    marks_move("after a crash inside the load", faulted["load.before_commit"])


def _crash(pipeline, point):
    return lambda: pipeline.tick(extra={"TOTESYS_CRASH_AT": point}, expect=137)


#: The kills of the SIGKILL test, round by round: each lands in the stage it names, timed from that
#: stage's own progress (a round of two kills ticks twice before the rerun).
KILL_ROUNDS = (("ingest",), ("process",), ("load",), ("process", "load"))


def test_sigkill_inside_each_stage_then_a_rerun_equals_a_clean_run(seeded, new_pipeline, compare, tally,
                                                                   at_once, marks_move):
    """Rounds of: source change, a tick SIGKILLed inside a chosen stage, a rerun; then compare.

    A kill is timed from the stage it targets, not from a clock: ingest is killed on its first
    "table extracted" line, the processor on its first "wrote <table>" line (both read from the
    tick's stderr as they are written), the loader once its warehouse session is inside a
    transaction: the test holds the fact tables in SHARE mode, so the loader's first fact INSERT
    waits there (seen in pg_stat_activity). Each kill must land before that stage's completion
    marker (the ingested manifest, the processed manifest, the load ledger row) exists.
    """
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    at_once(faulted.tick, clean.tick)
    marks = [faulted.marks()]
    for round_, stages in enumerate(KILL_ROUNDS):
        change(seeded, seed=100 + round_, changes=30)

        def kills():
            for stage in stages:
                landed = _kill_inside(faulted, stage)
                tally.kills[landed] += 1
                tally.fault(f"SIGKILL inside {stage}")

        at_once(kills, clean.tick)
        faulted.tick()
        compare(f"SIGKILL inside {' then '.join(stages)}", faulted, clean)
        marks.append(faulted.marks())
    marks.append(marks_move("after SIGKILLs", faulted))
    for stage, history in zip(("process", "load"), zip(*marks)):
        moved = [m for m in history if m is not None]
        assert moved == sorted(moved), f"the {stage} mark went back: {history}"
    assert faulted.command("reconcile").returncode == 0


def _kill_inside(pipeline, stage: str) -> str:
    """Start a tick, SIGKILL it inside `stage`, and assert that the stage had not finished."""
    holder = _hold_facts(pipeline) if stage == "load" else None
    process = pipeline.start("tick", stderr=subprocess.PIPE, extra={"TOTESYS_LOG_LEVEL": "INFO"})
    lines, target = [], {}
    killed = threading.Event()

    def kill(reason: dict) -> None:
        if not killed.is_set():
            process.send_signal(signal.SIGKILL)
            target.update(reason)
            killed.set()

    def read() -> None:
        for raw in process.stderr:
            line = json.loads(raw) if raw.startswith(b"{") else {"message": raw.decode(errors="replace")}
            lines.append(line)
            if stage == "ingest" and line.get("message") == "table extracted":
                kill({"run_id": line["run_id"]})
            if stage == "process" and line.get("stage") == "process" and line["message"].startswith("wrote "):
                kill({"run_id": line["run_id"]})

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if holder is not None:
        try:
            _kill_once_loading(pipeline, process, kill)
        finally:
            holder.run("ROLLBACK")  # the killed loader's transaction now fails with its dead connection
            holder.close()
    code = process.wait(timeout=600)
    reader.join(timeout=60)
    assert killed.is_set() and code == -signal.SIGKILL, f"the kill never landed in {stage}: exit {code}, {lines[-3:]}"
    if stage == "load":  # the run being loaded is not known, only that one was: a processed run not loaded
        loaded = {r for (r,) in run_sql_rows(pipeline, "SELECT run_id FROM etl_load_ledger")}
        unloaded = set(pipeline.run_ids(pipeline.processed_bucket)) - loaded
        assert unloaded, f"the kill landed after the load had finished every processed run: {lines[-3:]}"
        return stage
    run_id = target["run_id"]
    ingested = lake.manifest_exists(pipeline.ingest_bucket, run_id)
    processed = lake.manifest_exists(pipeline.processed_bucket, run_id)
    assert not {"ingest": ingested, "process": processed}[stage], \
        f"the kill landed after {stage} had finished run {run_id}: {lines[-3:]}"
    assert stage == "ingest" or ingested, f"a run processed before its ingest finished: {run_id}"
    return stage


def run_sql_rows(pipeline, statement: str, **params):
    conn = pg8000.native.Connection(**parse_url(pipeline.warehouse_url))
    try:
        return conn.run(statement, **params)
    finally:
        conn.close()


def _hold_facts(pipeline) -> pg8000.native.Connection:
    """A transaction holding the fact tables in SHARE mode: reads go on, a loader's first fact
    INSERT waits, inside its load transaction, after it has merged the run's state and dimensions."""
    conn = pg8000.native.Connection(**parse_url(pipeline.warehouse_url))
    conn.run("START TRANSACTION")
    conn.run("LOCK TABLE fact_sales_order, fact_purchase_order, fact_payment IN SHARE MODE")
    return conn


def _kill_once_loading(pipeline, process, kill) -> None:
    """Kill the tick once its loader waits, mid-transaction, on the fact tables `_hold_facts` holds."""
    database = parse_url(pipeline.warehouse_url)["database"]
    conn = pg8000.native.Connection(**parse_url(pipeline.warehouse_url))
    try:
        while process.poll() is None:
            waiting = conn.run("SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND "
                               "application_name = 'totesys-etl-load' AND wait_event_type = 'Lock' AND "
                               "wait_event = 'relation' AND xact_start IS NOT NULL", d=database)[0][0]
            if waiting:
                kill({})  # a processed run is mid-load: asserted below
                return
            time.sleep(0.02)
    finally:
        conn.close()


def _notifications(pipeline, bucket: str, run_ids) -> list[dict]:
    """The ObjectCreated events S3 sends for these manifests, keys URL-encoded as S3 sends them."""
    return [{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(lake.manifest_key(r))}}}]}
            for r in run_ids]


def _deliver(bucket: str, events: list[dict]) -> None:
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=queue_name(bucket))["QueueUrl"]
    for event in events:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))


def _drain(bucket: str) -> int:
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=queue_name(bucket))["QueueUrl"]
    drained = 0
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return drained
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            drained += 1


def test_every_notification_twice_and_shuffled(seeded, new_pipeline, compare, tally, at_once, marks_move):
    """Runs reach the processor and the loader out of order and twice; then every event of the
    lake is replayed twice, shuffled, and no star row changes at all, surrogate keys included."""
    rng = random.Random(17)
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    at_once(faulted.tick, clean.tick)
    for n in range(3):  # three runs ingested, none processed: their events wait in the queue
        change(seeded, seed=200 + n)
        at_once(_crash(faulted, "ingest.after_manifest"), clean.tick)
    runs = faulted.manifests(faulted.ingest_bucket)
    assert _drain(faulted.ingest_bucket) == 3  # what S3 had sent, replaced by the shuffled replays
    events = _notifications(faulted, faulted.ingest_bucket, [lake.run_id_of_manifest(k) for k in runs]) * 2
    rng.shuffle(events)
    _deliver(faulted.ingest_bucket, events)
    tally.fault("notification out of order or twice", len(events))
    faulted.tick()
    compare("runs processed and loaded out of order, each event twice", faulted, clean)

    before = faulted.digest()
    for bucket in (faulted.ingest_bucket, faulted.processed_bucket):
        replay = _notifications(faulted, bucket, [lake.run_id_of_manifest(k) for k in faulted.manifests(bucket)]) * 2
        rng.shuffle(replay)
        _deliver(bucket, replay)
        tally.fault("notification replayed for a loaded run", len(replay))
    faulted.tick()
    assert faulted.digest() == before
    compare("every event replayed twice, shuffled", faulted, clean)
    marks_move("after replayed events", faulted)
