"""`make bench MODE=cdc` at a tiny size: the cdc-mode figures beside the poll mode's, a warehouse
that matches the source after each tick, and no slot left behind. No timing is asserted."""
import io
import os

import pytest

from totesys_etl.bench import cdc, scratch
from totesys_etl.local.services import admin

pytestmark = pytest.mark.slow


@pytest.fixture
def svc(postgres, aws):
    keys = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return scratch.Services(postgres, postgres.reader_password, {k: os.environ[k] for k in keys})


def test_a_tiny_cdc_bench_reports_the_figures_beside_poll_and_drops_its_slot(svc, tmp_path):
    out = io.StringIO()
    poll = {"orders": 300, "initial_load_s": 1.0, "floor_s": 0.5, "ratio_to_floor": 2.0,
            "noop_tick_handler_s": 0.1, "tick_1000_handler_s": 0.4}
    results = cdc.cdc_bench(svc, 300, tmp_path, out, poll)

    assert results["mode"] == "cdc" and results["orders"] == 300 and results["poll"] == poll
    detail = results["detail"]
    assert results["initial_load_s"] == pytest.approx(sum(detail["initial_load_s"].values()), abs=1e-3)
    assert results["ratio_to_floor"] == pytest.approx(results["initial_load_s"] / results["floor_s"], rel=1e-2)
    # the first tick is the snapshot: every source row; the no-op tick nothing; the next the changes
    assert detail["initial_load_rows"]["ingest"] >= sum(detail["source_rows"].values())
    assert detail["tick_1000_rows"]["ingest"] > 0 and detail["tick_1000_rows"]["load"] > 0
    assert "| ratio_to_floor | 2.0 |" in cdc.markdown(results)
    conn = admin.admin_connection(svc.cluster, "postgres")
    try:
        assert conn.run("SELECT count(*) FROM pg_replication_slots WHERE slot_name = :s", s=cdc.SLOT) == [[0]]
    finally:
        conn.close()
