"""Low-water marks end to end (issue 26, contract §4 and §5 TOTESYS_SETTLE_SECONDS).

A sweep's mark may pass a run id only once it is older than the settle period; the mark never
moves back, whatever crashes or slower sweeps come after. Here real ticks make the runs, and the
sweeps run with settle periods chosen from those run ids, so the marks land exactly where the
rule says, and the processor's mark (`_state/process_mark/` in the processed bucket) and the
loader's (`etl_load_mark`) are read where the stages keep them.
"""
import time
from datetime import datetime, timezone

import pytest

from totesys_etl.load.handler import lambda_handler as load_handler
from totesys_etl.local.source.simulate import simulate
from totesys_etl.process.handler import lambda_handler as process_handler

pytestmark = pytest.mark.slow

HOLD = {"TOTESYS_SETTLE_SECONDS": "3600"}


def _age(run_id: str) -> float:
    started = datetime.strptime(run_id, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - started).total_seconds()


def test_a_run_inside_the_settle_window_holds_the_marks_back_and_they_never_go_back(
        seeded, new_pipeline, monkeypatch, against_oracle):
    pipeline = new_pipeline("m")
    pipeline.tick(extra=HOLD)
    time.sleep(9)
    simulate(seeded.admin_url, changes=20, seed=91)
    pipeline.tick(extra=HOLD)
    first, second = pipeline.run_ids()
    assert pipeline.marks() == (None, None)  # both runs are inside the settle window

    for key, value in pipeline.env.items():  # the sweeps below run in this process, as a Lambda would
        monkeypatch.setenv(key, value)

    def sweep(settle) -> tuple:
        """Both sweeps, each with the settle period `settle()` gives just before it starts."""
        for handler in (process_handler, load_handler):
            monkeypatch.setenv("TOTESYS_SETTLE_SECONDS", str(settle()))
            handler({}, None)
        return pipeline.marks()

    # The second run 8 s inside the window (the margin for what a sweep does before it reads the
    # clock, on a busy machine); the first, over nine seconds older, outside it.
    assert _age(first) - _age(second) > 9
    assert sweep(lambda: _age(second) + 8) == (first, first)
    assert sweep(lambda: 0) == (second, second)
    assert sweep(lambda: 3600) == (second, second)  # nothing settled now: the marks stay, never back to None
    pipeline.tick(extra=HOLD)
    assert pipeline.marks() == (second, second)

    # A crash inside the load, then a rerun: the marks hold, then move to the newest run.
    simulate(seeded.admin_url, changes=20, seed=92)
    pipeline.tick(extra={"TOTESYS_CRASH_AT": "load.before_commit", "TOTESYS_SETTLE_SECONDS": "0"}, expect=137)
    crashed = pipeline.run_ids()[-1]
    process_mark, load_mark = pipeline.marks()
    assert second <= process_mark <= crashed and second <= load_mark < crashed  # held, not back
    pipeline.tick(extra={"TOTESYS_SETTLE_SECONDS": "0"})
    newest = pipeline.run_ids()[-1]
    assert pipeline.marks() == (newest, newest)
    assert pipeline.command("reconcile").returncode == 0
    against_oracle("marks held, moved, crashed and rerun", pipeline)
