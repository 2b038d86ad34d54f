"""Exactly once, proven (issue 17): every fault point, SIGKILLs at random moments, replayed events.

Each test runs a *faulted* pipeline and a *clean* one over the same source, ticking them at the
same source states (test/e2e/conftest.py), and then compares their warehouses table by table as
multisets of rows without surrogate keys. A crash whose run never got its ingest manifest never
happened (SPEC §4: until the manifest exists the run does not exist), so the clean pipeline ticks
where the faulted one's ingest took effect.
"""
import json
import random
import signal
import time
from urllib.parse import quote_plus

import boto3
import pytest

from totesys_etl import lake
from totesys_etl.faults import POINTS
from totesys_etl.local.notifications import queue_name
from totesys_etl.local.simulate import simulate

pytestmark = pytest.mark.slow


def change(source, seed: int, changes: int = 40) -> None:
    simulate(source.admin_url, changes=changes, seed=seed)


def test_a_crash_at_each_point_of_a_first_tick_then_a_rerun_equals_a_clean_run(seeded, new_pipeline, compare, tally,
                                                                               at_once):
    """Six pipelines, each crashed at one SPEC §6 point on its first tick, then rerun."""
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
        seeded, new_pipeline, compare, tally, at_once):
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


def _crash(pipeline, point):
    return lambda: pipeline.tick(extra={"TOTESYS_CRASH_AT": point}, expect=137)


def test_sigkill_at_random_moments_then_a_rerun_equals_a_clean_run(seeded, new_pipeline, compare, tally, tmp_path,
                                                                   at_once):
    """Rounds of: source change, tick killed (once or twice) after a seeded-random delay, rerun."""
    rng = random.Random(20261124)
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    started = time.monotonic()
    clean.tick()
    duration = time.monotonic() - started  # a whole tick, start-up included: kills land inside it
    faulted.tick()
    for round_ in range(4):
        change(seeded, seed=100 + round_, changes=30)

        def kills():
            for kill in range(rng.choice((1, 2))):
                log = tmp_path / f"kill-{round_}-{kill}.log"
                with open(log, "w") as stderr:
                    process = faulted.start("tick", stderr=stderr, extra={"TOTESYS_LOG_LEVEL": "INFO"})
                    time.sleep(rng.uniform(0.3, 1.1) * duration)
                    process.send_signal(signal.SIGKILL)
                    code = process.wait()
                tally.kills[_landed_in(log, code)] += 1
                if code == -signal.SIGKILL:
                    tally.fault("SIGKILL mid-tick")

        at_once(kills, clean.tick)
        faulted.tick()
        compare("SIGKILL at a random moment", faulted, clean)
    assert faulted.command("reconcile").returncode == 0


def _landed_in(log, code: int) -> str:
    """Which stage a kill interrupted: the stage of the last log line written before it."""
    if code == 0:
        return "after the tick ended"
    stages = [json.loads(line).get("stage") for line in log.read_text().splitlines() if line.startswith("{")]
    return stages[-1] if stages else "start-up"


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


def test_every_notification_twice_and_shuffled(seeded, new_pipeline, compare, tally, at_once):
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
