"""`make bench` machinery at a tiny size: every contract §8 key, figures that add up, failures that stop it.

No timing is asserted (the machine is shared); what must hold whatever the speed is checked.
"""
import dataclasses
import io
import json
import os
import time

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.bench import baselines, run, scratch, stage
from totesys_etl.bench import results as results_module
from totesys_etl.local.source.seed import seed
from totesys_etl.local.source.snapshot import SNAPSHOT, load_snapshot

pytestmark = pytest.mark.slow

SPEC_KEYS = {"orders", "initial_load_s", "process_start_s", "floor_s", "ratio_to_floor", "speedup_vs_to_sql",
             "noop_tick_handler_s", "tick_1000_handler_s", "peak_rss_mb", "snapshot_load_s", "peak_tmp_mb"}


@pytest.fixture
def svc(postgres, aws, fx_api):
    keys = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return scratch.Services(postgres, postgres.reader_password, {k: os.environ[k] for k in keys}, fx_api.url)


def _snapshot_rows() -> int:
    """Rows in the snapshot's files, counted independently of the bench (a scratch load)."""
    import gzip

    return sum(sum(1 for line in gzip.open(p, "rt") if line.strip()) for p in SNAPSHOT.glob("*.jsonl.gz"))


def test_a_tiny_bench_reports_every_spec_key_with_figures_that_add_up(svc, tmp_path):
    out = io.StringIO()
    results = run.run_bench(svc, 300, tmp_path, out)

    assert SPEC_KEYS <= results.keys()
    json.dumps(results)  # what main() writes to .local/bench.json
    assert results["orders"] == 300
    detail = results["detail"]
    source_rows = detail["source_rows"]
    assert source_rows["sales_order"] == 300 and source_rows["purchase_order"] == 100
    for key in ("peak_rss_mb", "snapshot_load_s", "peak_tmp_mb"):
        assert set(results[key]) == {"ingest", "process", "load"}
        assert all(v >= 0 for v in results[key].values())
    assert all(v > 0 for key in ("peak_rss_mb", "snapshot_load_s") for v in results[key].values())
    # The ingest holds the run's CSVs in its temporary folder, the processor CSVs and their Parquet.
    assert results["peak_tmp_mb"]["ingest"] > 0 and results["peak_tmp_mb"]["process"] > 0
    assert all(detail["initial_load"][s]["peak_tmp_mb"] == results["peak_tmp_mb"][s] for s in results["peak_tmp_mb"])
    stages = detail["initial_load"]
    assert results["initial_load_s"] == pytest.approx(sum(s["handler_s"] for s in stages.values()), abs=1e-3)
    assert results["process_start_s"] == pytest.approx(sum(s["process_start_s"] for s in stages.values()), abs=1e-3)
    assert results["process_start_s"] > 0
    # The ingest run read every source row, and the FX rates of the stand-in (the pipelines fetch
    # them as deployed ones do); the processor wrote one lake row per row read (plus dim_date).
    main = scratch.Pipeline(*run.MAIN)
    assert main.env(svc)["TOTESYS_FX_API_URL"] == svc.fx_api_url
    conn = pg8000.native.Connection(**parse_url(svc.admin_url(main.warehouse_db)))
    try:
        rates = conn.run("SELECT count(*), count(DISTINCT currency_id) FROM fact_exchange_rate")[0]
    finally:
        conn.close()
    assert rates[0] > 0 and rates[1] == 3
    assert detail["fx_rates"] == rates[0]
    assert stages["ingest"]["rows"] == sum(source_rows.values()) + rates[0]
    assert stages["process"]["rows"] > stages["ingest"]["rows"]
    assert set(detail["floor_s"]) == set(source_rows) and results["floor_s"] > 0
    assert results["ratio_to_floor"] == pytest.approx(results["initial_load_s"] / results["floor_s"], rel=1e-2)
    assert results["speedup_vs_to_sql"] == pytest.approx(detail["to_sql_s"] / detail["our_load_s"], rel=1e-2)
    assert results["noop_tick_handler_s"] > 0 and results["tick_1000_handler_s"] > 0
    # The no-change tick moved nothing; the tick after the changes carried exactly them out of the source.
    assert detail["noop_tick_rows"] == {"ingest": 0, "process": 0, "load": 0}
    assert detail["tick_1000_rows"]["ingest"] == run.TICK_CHANGES
    snap = scratch.Pipeline(*run.SNAPSHOT)
    conn = pg8000.native.Connection(**parse_url(svc.admin_url(snap.warehouse_db)))
    try:
        snapshot_rates = conn.run("SELECT count(*) FROM fact_exchange_rate")[0][0]
    finally:
        conn.close()
    assert detail["snapshot_rows"]["ingest"] == _snapshot_rows() + snapshot_rates
    assert detail["machine"]["nproc"] >= 1 and detail["machine"]["postgresql"]

    table = results_module.markdown(results)
    for key in SPEC_KEYS:
        assert f"`{key}`" in table
    assert f"FX on, as deployed: the initial load fetched {rates[0]:,} rates." in table
    assert "-> initial load" in out.getvalue()
    assert (tmp_path / "bench.log").read_text().count('"stage": "load"') > 0  # the stages' own log lines

    # The floor's scratch schema is gone; the to_sql scratch database too.
    conn = pg8000.native.Connection(**parse_url(svc.admin_url("postgres")))
    try:
        assert not conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=baselines.TO_SQL_DB)
    finally:
        conn.close()
    conn = pg8000.native.Connection(**parse_url(svc.admin_url(run.MAIN[0])))
    try:
        assert not conn.run("SELECT 1 FROM pg_namespace WHERE nspname = :n", n=baselines.FLOOR_SCHEMA)
    finally:
        conn.close()

    # The sanity check would have caught a lost row.
    assert run.count_mismatches(svc, main) == []
    conn = pg8000.native.Connection(**parse_url(svc.admin_url(main.warehouse_db)))
    try:
        conn.run("DELETE FROM dim_design WHERE design_id = (SELECT min(design_id) FROM dim_design)")
        conn.run("DELETE FROM fact_payment WHERE payment_id = (SELECT min(payment_id) FROM fact_payment)")
    finally:
        conn.close()
    problems = run.count_mismatches(svc, main)
    assert len(problems) == 2 and problems[0].startswith("dim_design") and problems[1].startswith("fact_payment")


def _left_for_autovacuum(svc, database: str) -> dict[str, tuple[int, bool]]:
    """Each large source table's rows inserted since it was last vacuumed, and whether it ever was."""
    conn = pg8000.native.Connection(**parse_url(svc.admin_url(database)))
    try:
        rows = conn.run("SELECT relname, n_ins_since_vacuum, last_vacuum IS NOT NULL FROM pg_stat_user_tables "
                        "WHERE relname IN ('sales_order', 'purchase_order', 'transaction', 'payment')")
    finally:
        conn.close()
    return {name: (inserted, vacuumed) for name, inserted, vacuumed in rows}


def test_settle_leaves_a_seeded_source_with_nothing_for_autovacuum_to_do(svc):
    """A freshly COPYed source has never been vacuumed: autovacuum would soon work through it while the
    timed stages run. Settled, it has been vacuumed, with no row inserted since."""
    main = scratch.Pipeline(*run.MAIN)
    scratch.prepare(svc, main)
    seed(main.env(svc)["TOTESYS_SOURCE_ADMIN_URL"], orders=300)
    seeded = _left_for_autovacuum(svc, main.source_db)
    assert len(seeded) == 4 and all(inserted > 0 and not vacuumed for inserted, vacuumed in seeded.values()), seeded

    scratch.settle(svc, main.source_db)
    assert all(inserted == 0 and vacuumed for inserted, vacuumed in _left_for_autovacuum(svc, main.source_db).values())


def test_skip_baselines_leaves_out_to_sql_but_keeps_the_floor_and_the_ratio(svc, tmp_path, monkeypatch):
    """Also without an FX stand-in: the bench still runs, and says the rates were left out. With a
    small part size the first load goes in parts, fanned out whatever its size, and each processor
    part is measured alone.

    400-row parts over 900 orders: the big tables go in parts (sales_order in 3) and the fixed-size
    ones (400 designs, 300 addresses, 150 counterparties) do not, so the parted path runs with 9 or so
    part processes per stage instead of the 25 that 60-row parts over 150 orders made."""
    def never(*args, **kwargs):
        raise AssertionError("to_sql ran although the baselines were skipped")

    monkeypatch.setattr(run, "to_sql_seconds", never)
    results = run.run_bench(dataclasses.replace(svc, fx_api_url=None), 900, tmp_path, io.StringIO(),
                            skip_baselines=True, part_rows=400)

    parts = results["detail"]["parts"]
    assert parts["part_rows"] == 400 and parts["ingested_parts"]["sales_order"] == 3
    assert "design" not in parts["ingested_parts"]  # 400 rows: not over the part size
    process = parts["per_invocation"]["process"]
    assert process["invocations"] == 1 + sum(parts["ingested_parts"].values())
    assert process["max_s"] > 0 and process["max_peak_rss_mb"] > 0
    assert len(process["part_s"]) == process["invocations"] - 1
    assert process["max_s"] == pytest.approx(max(process["part_s"]), abs=0.01)
    load = parts["per_invocation"]["load"]  # each processed part staged by a process of its own
    assert load["invocations"] == 1 + len(load["part_s"]) and len(load["part_s"]) >= len(process["part_s"])
    assert parts["first_load_wall_s"] == pytest.approx(results["initial_load_s"], abs=1e-3)

    assert results["speedup_vs_to_sql"] is None and results["detail"]["to_sql_s"] is None
    assert results["floor_s"] > 0
    assert results["ratio_to_floor"] == pytest.approx(results["initial_load_s"] / results["floor_s"], rel=1e-2)
    assert "skipped (--skip-baselines)" in results_module.markdown(results)
    assert results["detail"]["fx_rates"] is None and "FX off" in results_module.markdown(results)


def test_missed_targets_names_each_figure_over_its_limit():
    results = {"orders": 1_000_000, "ratio_to_floor": 3.5, "noop_tick_handler_s": 0.2, "tick_1000_handler_s": 2.5,
               "snapshot_load_s": {"ingest": 0.5, "process": 0.5, "load": 0.5},
               "peak_rss_mb": {"ingest": 100.0, "process": 1100.0, "load": 300.0}}
    assert results_module.missed_targets(results) == {
        "ratio_to_floor": (3.5, 3.0), "tick_1000_handler_s": (2.5, 2.0), "peak_rss_mb": (1100.0, 1024.0)}
    assert "peak_rss_mb" not in results_module.missed_targets({**results, "orders": 100_000})


def test_a_failing_stage_stops_the_bench_with_its_reason(svc, tmp_path):
    env = {**scratch.Pipeline("nowhere_src", "nowhere_dw", ("no-such-ingested", "no-such-processed")).env(svc)}
    with pytest.raises(scratch.BenchFailed, match="the ingest handler failed"):
        run.run_stage("ingest", env, {}, tmp_path / "bench.log")
    assert "ERROR" in (tmp_path / "bench.log").read_text()


def test_a_stage_process_reports_its_own_measurements(svc, tmp_path, source):
    """The per-stage runner on its own: handler seconds, start-up and peak RSS, measured in the child."""
    load_snapshot(source.admin_url)
    scratch.fresh_buckets(svc, ("bench-stage-ingested", "bench-stage-processed"))
    env = {"TOTESYS_SOURCE_URL": source.reader_url, "TOTESYS_WAREHOUSE_URL": svc.admin_url("postgres"),
           "TOTESYS_INGEST_BUCKET": "bench-stage-ingested", "TOTESYS_PROCESSED_BUCKET": "bench-stage-processed",
           **svc.aws}
    before = set(os.listdir(os.environ["TMPDIR"]))
    outcome = run.run_stage("ingest", env, {}, tmp_path / "bench.log")
    assert outcome["stage"] == "ingest" and "error" not in outcome
    assert outcome["peak_tmp_mb"] > 0
    assert set(os.listdir(os.environ["TMPDIR"])) == before  # the stage's temporary folder is removed
    assert outcome["handler_s"] > 0 and outcome["process_start_s"] > 0
    assert 0 < outcome["process_start_cpu_s"]  # start-up's CPU seconds, what import changes are compared on
    assert outcome["peak_rss_mb"] > 20  # a Python process with boto3 and pyarrow loaded
    assert run.stage_rows(outcome) == _snapshot_rows()


def test_the_tmp_watch_reports_the_most_held_at_once(tmp_path):
    """Files written, then deleted, then a smaller one: the peak is the first, not the last or the sum."""
    folder = tmp_path / "tmp"
    (folder / "run").mkdir(parents=True)
    with stage.TmpWatch(str(folder), interval=0.01) as watch:
        (folder / "run" / "a.csv").write_bytes(b"x" * 3_000_000)
        (folder / "b.parquet").write_bytes(b"y" * 1_000_000)
        deadline = time.monotonic() + 30   # the sampler thread runs when a busy machine lets it
        while watch.peak_bytes < 4_000_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        (folder / "run" / "a.csv").unlink()
        (folder / "b.parquet").unlink()
        (folder / "c.csv").write_bytes(b"z" * 500_000)
        time.sleep(0.2)
    assert watch.peak_bytes == 4_000_000
    assert watch.peak_mb == round(4_000_000 / 1024 / 1024, 3)
    assert watch.size() == 500_000


def test_the_courier_figure_ingests_one_large_file_whole(svc, tmp_path):
    """Issue 29: a courier file of a few MB through the three stages, each in its own process."""
    from totesys_etl.bench.courier import courier_bench

    figure = courier_bench(svc, 3, tmp_path, tmp_path / "courier.log", run.run_stage)
    assert figure["file_mb"] >= 3 and figure["events"] > 10_000
    assert set(figure["events_per_s"]) == set(figure["peak_rss_mb"]) == {"ingest", "process", "load"}
    assert all(v > 0 for v in figure["events_per_s"].values())
    rows = _warehouse_rows(svc, "bench_courier_warehouse")
    assert rows == figure["events"]  # every event once


def _warehouse_rows(svc, database: str) -> int:
    conn = pg8000.native.Connection(**parse_url(svc.admin_url(database)))
    try:
        return conn.run("SELECT count(DISTINCT event_id) FROM fact_delivery")[0][0]
    finally:
        conn.close()
