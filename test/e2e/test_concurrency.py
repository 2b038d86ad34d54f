"""Two at once (issue 17, contract §3 "Concurrency"): two ticks, two processors, two loaders.

Whatever runs side by side, the warehouse ends as a clean pipeline's that ticked at the same
source states, one tick at a time.
"""
import json
from urllib.parse import quote_plus

import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.load.ledger import LOADER_LOCK_KEY
from totesys_etl.local.source.simulate import simulate

pytestmark = pytest.mark.slow


def test_two_ticks_at_once_with_a_source_change_between_their_starts(seeded, new_pipeline, compare, tally,
                                                                     tmp_path, at_once, wait_line, open_gates):
    """Tick A has taken its snapshot when the change commits and tick B starts: A's run holds the
    state before the change, B's the state after, and both ticks return only once loaded.

    B is started first and waits, imported, at a gate that opens the moment the change commits.
    The test holds the loaders' advisory lock meanwhile, so neither tick can finish before the
    other has ingested: both are seen running at once, then both load, side by side."""
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    at_once(faulted.tick, clean.tick)
    simulate(seeded.admin_url, changes=40, seed=31)
    clean.tick()  # the clean run of A's source state
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    info = {"TOTESYS_LOG_LEVEL": "INFO"}
    holder = pg8000.native.Connection(**parse_url(faulted.warehouse_url))
    try:
        holder.run("SELECT pg_advisory_lock(:key)", key=LOADER_LOCK_KEY)
        with open(a_log, "w") as a_err, open(b_log, "w") as b_err:
            b = faulted.start_gated("tick", stderr=b_err, extra=info)
            a = faulted.start("tick", stderr=a_err, extra=info)
            assert wait_line(a_log, '"table extracted"', a)  # A's snapshot is fixed
            simulate(seeded.admin_url, changes=40, seed=32)
            open_gates(b)
            assert wait_line(b_log, '"ingest run written"', b)  # B's snapshot is taken after the change
            assert a.poll() is None and b.poll() is None, "the two ticks did not run at once"
            holder.run("SELECT pg_advisory_unlock(:key)", key=LOADER_LOCK_KEY)
            assert (a.wait(timeout=600), b.wait(timeout=600)) == (0, 0)
            b.stdout.close()
    finally:
        holder.close()
    a_run, b_run = ([json.loads(line)["run_id"] for line in log.read_text().splitlines()][0] for log in (a_log, b_log))
    assert a_run < b_run
    tally.fault("two ticks at once, a change between their starts")
    clean.tick()
    ingested = faulted.manifests(faulted.ingest_bucket)
    assert len(ingested) == 3 and faulted.manifests(faulted.processed_bucket) == ingested
    compare("two ticks at once", faulted, clean)
    assert faulted.command("reconcile").returncode == 0


def _event(bucket: str, run_ids) -> dict:
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(lake.manifest_key(r))}}}
                        for r in run_ids]}


def _finished(process) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_processors_and_two_loaders_at_once_on_the_same_runs(seeded, new_pipeline, compare, tally, at_once,
                                                                 open_gates, marks_move):
    """Three runs left behind (one processed, two only ingested); then a sweeping processor, an
    event-driven one (runs in reverse order) and two loaders likewise, all started together; then
    two loaders again on the same runs. The handlers alone finish the job, once."""
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    at_once(faulted.tick, clean.tick)
    for n, point in enumerate(("process.after_manifest", "ingest.after_manifest", "ingest.after_manifest")):
        simulate(seeded.admin_url, changes=30, seed=40 + n)
        at_once(lambda: faulted.tick(extra={"TOTESYS_CRASH_AT": point}, expect=137), clean.tick)
    ingested = [lake.run_id_of_manifest(k) for k in faulted.manifests(faulted.ingest_bucket)]
    pending = ingested[1:]
    assert len(pending) == 3 and len(faulted.manifests(faulted.processed_bucket)) == 2

    newest_first_ingested = _event(faulted.ingest_bucket, reversed(pending))
    newest_first_processed = _event(faulted.processed_bucket, reversed(pending))
    first = [faulted.start_handler("process", {}), faulted.start_handler("process", newest_first_ingested),
             faulted.start_handler("load", {}), faulted.start_handler("load", newest_first_processed)]
    open_gates(*first)  # all four start their work together, whatever their start-up took
    results = [_finished(p) for p in first]
    second = [faulted.start_handler("load", {}), faulted.start_handler("load", newest_first_processed)]
    open_gates(*second)
    results += [_finished(p) for p in second]
    tally.fault("handler running beside another of its stage", 6)

    processed = [r["run_id"] for r in results[0]["runs"] + results[1]["runs"]]
    loaded = [r["run_id"] for res in results[2:] for r in res["runs"]]
    # Both processors may do a run's work (a create-only write is no claim); each output is written once.
    assert set(processed) == set(pending[1:])
    assert sorted(loaded) == sorted(pending)         # each run loaded by exactly one of the four
    assert all(r["status"] == "ok" for r in results[2:])
    assert faulted.manifests(faulted.processed_bucket) == faulted.manifests(faulted.ingest_bucket)
    compare("two processors and two loaders at once", faulted, clean)
    marks_move("after two processors and two loaders at once", faulted)  # a quiet tick changes nothing
