"""The FX rates source end to end (issue 28, contract §9): real `totesys-etl tick`s against the local
stand-in API (a real HTTP server on loopback), over a small seeded source.

Each test ticks a pipeline with TOTESYS_FX_API_URL set and reads what landed: the manifest's `fx`
watermark and `fx_rate` file, `fact_exchange_rate`, `dim_date`, the sales-in-GBP view, the ERROR
lines and the quarantine. Faults come from the stand-in's switches; a faulted pipeline is then
compared with a clean one over the same source and the same API.
"""
import json
import re
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import quote_plus

import boto3
import pytest

from totesys_etl import lake
from totesys_etl.faults import POINTS
from totesys_etl.local.services.fx_api import load_dataset

pytestmark = pytest.mark.slow  # like every e2e module: the whole suite runs it, the inner loop does not

RATES = "SELECT rate_date, currency_id, units_per_gbp, carried FROM fact_exchange_rate ORDER BY 1, 2"
#: The seeded currencies (local/source/big_tables.py): GBP 1, USD 2, EUR 3.
CODES = {1: "GBP", 2: "USD", 3: "EUR"}


@pytest.fixture
def fx_pipeline(new_pipeline, fx_api):
    """`fx_pipeline(name)`: a pipeline whose ticks have the FX source on, pointed at the stand-in."""
    def make(name):
        pipeline = new_pipeline(name)
        pipeline.env["TOTESYS_FX_API_URL"] = fx_api.url
        return pipeline
    return make


def manifest(pipeline, run_id):
    body = boto3.client("s3").get_object(Bucket=pipeline.ingest_bucket, Key=lake.manifest_key(run_id))["Body"]
    return json.loads(body.read())


def rates(run_sql, pipeline):
    return run_sql(pipeline.warehouse_url, RATES)


def assert_unbroken_and_as_published(rows, first: date, last: date):
    """Every day first..last has one row per currency; published days carry the dataset's rate, the
    other days the last published one, marked carried; GBP is 1 and never carried."""
    dataset = load_dataset()
    by_day = {}
    for day, currency_id, rate, carried in rows:
        by_day.setdefault(day, {})[currency_id] = (rate, carried)
    assert min(by_day) == first and max(by_day) == last
    day, last_published = first, None
    while day <= last:
        assert set(by_day[day]) == set(CODES), day
        assert by_day[day][1] == (Decimal(1), False)
        if day in dataset:
            last_published = dataset[day]
        for currency_id in (2, 3):
            rate, carried = by_day[day][currency_id]
            assert rate == Decimal(last_published[CODES[currency_id]]), (day, currency_id)
            assert carried is (day not in dataset), (day, currency_id)
        day += timedelta(days=1)


def test_first_backfill_then_incremental_days_with_carried_weekends(seeded, fx_pipeline, fx_api, run_sql):
    """The first run fetches from the earliest fact date, in pages; the next only the new days, the
    weekend between them carried from Friday's rate; the view values sales in GBP."""
    pipeline = fx_pipeline("fx")
    earliest = run_sql(seeded.admin_url, "SELECT min(created_at)::date FROM sales_order")[0][0]
    first_published = min(d for d in load_dataset() if d >= earliest)
    fx_api.latest = date(2025, 6, 13)  # a Friday: the API publishes nothing after it yet
    pipeline.tick()
    run_id = pipeline.run_ids()[-1]
    first = manifest(pipeline, run_id)
    assert first["fx"] == "2025-06-13"
    assert first["files"]["fx_rate"]["key"] == lake.table_key("fx_rate", run_id, "csv")
    assert len(fx_api.requests) > 10  # answered in pages of 60 days
    assert fx_api.requests[0].startswith(f"/{earliest.isoformat()}..")
    assert_unbroken_and_as_published(rates(run_sql, pipeline), first_published, date(2025, 6, 13))

    fx_api.requests.clear()
    fx_api.latest = date(2025, 6, 17)
    pipeline.tick()
    assert fx_api.requests[0].startswith("/2025-06-13..")  # Friday asked again, to carry it over the weekend
    assert manifest(pipeline, pipeline.run_ids()[-1])["fx"] == "2025-06-17"
    rows = rates(run_sql, pipeline)
    assert_unbroken_and_as_published(rows, first_published, date(2025, 6, 17))
    weekend = [r for r in rows if r[0] in (date(2025, 6, 14), date(2025, 6, 15))]
    assert [(r[1], r[3]) for r in weekend] == [(1, False), (2, True), (3, True)] * 2
    dates = run_sql(pipeline.warehouse_url, "SELECT count(*) FROM fact_exchange_rate r "
                    "WHERE NOT EXISTS (SELECT 1 FROM dim_date d WHERE d.date_id = r.rate_date)")
    assert dates == [[0]]

    fx_api.requests.clear()
    pipeline.tick()  # nothing new published: no file, the watermark carried forward
    latest = manifest(pipeline, pipeline.run_ids()[-1])
    assert "fx_rate" not in latest["files"] and latest["fx"] == "2025-06-17"

    valued = run_sql(pipeline.warehouse_url,
                     "SELECT v.sales_value, v.units_per_gbp, v.sales_value_gbp, v.currency_code FROM "
                     "analytics.sales_in_gbp v WHERE v.agreed_payment_date BETWEEN :a AND :b",
                     a=first_published, b=date(2025, 6, 17))
    assert valued and all(abs(gbp * rate - value) < Decimal('1e-6') for value, rate, gbp, _ in valued)
    assert {code for *_, code in valued} == {"GBP", "USD", "EUR"}

    assert "FX rates: newest date 2025-06-17" in pipeline.command("status").stdout
    fx_api.latest = None  # the API has published more since: reconcile compares the stored range only
    checked = pipeline.command("reconcile")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"^fact_exchange_rate\s.*\sok$", checked.stdout, re.M)
    run_sql(pipeline.warehouse_url, "UPDATE fact_exchange_rate SET units_per_gbp = units_per_gbp + 0.0001 "
            "WHERE rate_date = '2025-06-14' AND currency_id = 2")
    run_sql(pipeline.warehouse_url, "DELETE FROM fact_exchange_rate WHERE rate_date = '2024-02-29'")
    checked = pipeline.command("reconcile")
    assert checked.returncode == 1
    assert "fact_exchange_rate: 1 different" in checked.stdout
    assert "fact_exchange_rate: 3 missing from the warehouse" in checked.stdout


def test_fx_off_changes_nothing(seeded, new_pipeline, run_sql):
    pipeline = new_pipeline("off")
    pipeline.tick()
    assert "fx" not in manifest(pipeline, pipeline.run_ids()[-1])
    assert rates(run_sql, pipeline) == []


def test_429_with_retry_after_is_retried_and_succeeds(seeded, fx_pipeline, fx_api, run_sql, json_errors):
    pipeline = fx_pipeline("r")
    fx_api.latest = date(2023, 3, 1)
    fx_api.set_fault("429", times=2, after=1, retry_after=1)
    result = pipeline.tick(extra={"TOTESYS_LOG_LEVEL": "ERROR"})
    assert json_errors(result.stderr) == []
    assert manifest(pipeline, pipeline.run_ids()[-1])["fx"] == "2023-03-01"
    assert len(fx_api.requests) >= 4  # the first page, two 429s, then the retry that succeeded


@pytest.mark.parametrize("fault", ["500", "slow", "malformed", "nested", "negative"])
def test_a_failing_api_stops_fx_at_the_gap_the_run_still_loads_and_the_next_run_catches_up(
        seeded, fx_pipeline, fx_api, run_sql, json_errors, fault):
    """The third request fails: the two pages before it are stored (an unbroken run of days), one
    ERROR line says fx_unavailable, the totesys tables of the run load, and the next tick fetches from
    the gap on, ending equal to a pipeline that never saw the fault."""
    faulted, clean = fx_pipeline("f"), fx_pipeline("c")
    fx_api.latest = date(2023, 12, 29)
    fx_api.set_fault(fault, times=1, after=2, delay=3)
    result = faulted.tick(extra={"TOTESYS_LOG_LEVEL": "ERROR", "TOTESYS_FX_TIMEOUT_SECONDS": "1"})
    errors = json_errors(result.stderr)
    assert [e["error_kind"] for e in errors] == ["fx_unavailable"], errors
    run_id = faulted.run_ids()[-1]
    watermark = manifest(faulted, run_id)["fx"]
    rows = rates(run_sql, faulted)
    assert rows and max(r[0] for r in rows).isoformat() == watermark < "2023-12-29"
    assert_unbroken_and_as_published(rows, rows[0][0], date.fromisoformat(watermark))
    assert run_sql(faulted.warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == \
        run_sql(seeded.admin_url, "SELECT count(*) FROM sales_order")[0][0]
    held = boto3.client("s3").list_objects_v2(Bucket=faulted.processed_bucket, Prefix=f"quarantine/{run_id}/fx_rate/")
    quarantined = [o["Key"] for o in held.get("Contents", [])]
    if fault in ("malformed", "nested", "negative"):
        assert len(quarantined) == 2 and quarantined[0].endswith(".page3.json")  # the body and its reason
        listing = faulted.command("quarantine", "--run", run_id).stdout
        assert "fx_rate" in listing and "fx_unavailable" in listing
    else:
        assert quarantined == []

    faulted.tick()
    clean.tick()
    assert manifest(faulted, faulted.run_ids()[-1])["fx"] == "2023-12-29"
    assert rates(run_sql, faulted) == rates(run_sql, clean)


def test_a_currency_the_api_does_not_serve_stops_alone_and_a_missing_one_catches_up(
        seeded, fx_pipeline, fx_api, run_sql, json_errors):
    """Issue 34 item 9 (contract §9): the source gains XYZ, which the API does not serve (a 404 for
    any list holding it), and one answer lacks EUR. USD keeps loading every day to the end; EUR stops
    at the day before its gap; the one ERROR line and `status` name both codes. The next tick: EUR
    catches up alone, XYZ still stops alone; USD and EUR then equal a pipeline that never saw either."""
    faulted, clean = fx_pipeline("m"), fx_pipeline("c")
    fx_api.latest = date(2023, 12, 29)
    clean.tick()  # before XYZ exists: the reference
    run_sql(seeded.admin_url, "INSERT INTO currency (currency_id, currency_code, created_at, last_updated) "
            "VALUES (4, 'XYZ', now(), now())")
    # Requests: the list with XYZ (404), each symbol alone (EUR, USD, XYZ), page 1, then page 2 lacks EUR.
    fx_api.set_fault("missing", times=1, after=5)
    result = faulted.tick(extra={"TOTESYS_LOG_LEVEL": "ERROR"})
    errors = json_errors(result.stderr)
    assert [(e["error_kind"], e["missing_currencies"]) for e in errors] == [("fx_unavailable", ["EUR", "XYZ"])]
    first = manifest(faulted, faulted.run_ids()[-1])
    assert first["fx"] == "2023-12-29" and first["fx_unavailable"] == ["EUR", "XYZ"]
    assert first["fx_behind"]["XYZ"] is None and first["fx_behind"]["EUR"] < "2023-12-29"
    newest = dict(run_sql(faulted.warehouse_url, "SELECT currency_id, max(rate_date)::text FROM fact_exchange_rate "
                                                 "GROUP BY 1"))
    assert newest[2] == newest[1] == "2023-12-29" and newest[3] == first["fx_behind"]["EUR"] and 4 not in newest
    shown = faulted.command("status").stdout
    assert "fx_unavailable" in shown and "EUR, XYZ" in shown, shown

    faulted.tick()
    second = manifest(faulted, faulted.run_ids()[-1])
    assert second["fx_behind"] == {"XYZ": None} and second["fx_unavailable"] == ["XYZ"]
    served = "SELECT * FROM (" + RATES.replace(" ORDER BY 1, 2", "") + ") r WHERE currency_id < 4 ORDER BY 1, 2"
    assert run_sql(faulted.warehouse_url, served) == rates(run_sql, clean)


def test_a_replayed_run_changes_no_rate_row(seeded, fx_pipeline, fx_api, run_sql, open_gates):
    pipeline = fx_pipeline("p")
    fx_api.latest = date(2023, 6, 30)
    pipeline.tick()
    run_id = pipeline.run_ids()[-1]
    before = run_sql(pipeline.warehouse_url, "SELECT xmin::text, * FROM fact_exchange_rate ORDER BY 2, 3")
    handlers = []
    for stage, bucket in (("process", pipeline.ingest_bucket), ("load", pipeline.processed_bucket)):
        event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                              "s3": {"bucket": {"name": bucket},
                                     "object": {"key": quote_plus(lake.manifest_key(run_id))}}}]}
        handlers.append(pipeline.start_handler(stage, event))
    open_gates(*handlers)
    for handler in handlers:
        _, stderr = handler.communicate(timeout=120)
        assert handler.returncode == 0, stderr
    pipeline.tick()
    assert run_sql(pipeline.warehouse_url, "SELECT xmin::text, * FROM fact_exchange_rate ORDER BY 2, 3") == before


def test_a_crash_at_each_point_then_a_rerun_equals_a_clean_run(seeded, fx_pipeline, fx_api, run_sql, at_once,
                                                               compare):
    fx_api.latest = date(2024, 3, 28)
    faulted = {point: fx_pipeline(f"x{i}") for i, point in enumerate(POINTS)}
    clean = fx_pipeline("c")

    def crash(pipeline, point):
        return lambda: pipeline.tick(extra={"TOTESYS_CRASH_AT": point}, expect=137)
    at_once(clean.tick, *[crash(p, point) for point, p in faulted.items()])
    at_once(*[p.tick for p in faulted.values()])
    want = rates(run_sql, clean)
    assert want
    for point, pipeline in faulted.items():
        assert rates(run_sql, pipeline) == want, point
        compare(f"crash at {point} (FX on)", pipeline, clean)


def test_turning_fx_off_carries_its_watermark_forward_and_on_again_resumes(seeded, fx_pipeline, fx_api, run_sql):
    pipeline = fx_pipeline("o")
    fx_api.latest = date(2023, 3, 3)
    pipeline.tick()
    pipeline.tick(extra={"TOTESYS_FX_API_URL": ""})
    off = manifest(pipeline, pipeline.run_ids()[-1])
    assert off["fx"] == "2023-03-03" and "fx_rate" not in off["files"] and "fx_rate" not in off["rows"]
    fx_api.requests.clear()
    fx_api.latest = date(2023, 3, 7)
    pipeline.tick()
    assert fx_api.requests[0].startswith("/2023-03-03..")
    assert max(r[0] for r in rates(run_sql, pipeline)) == date(2023, 3, 7)


def test_two_ticks_at_once_store_each_rate_once(seeded, fx_pipeline, fx_api, run_sql, at_once):
    """Both ingest runs read the same watermark and fetch the same days; the loader keeps one row per
    key, equal to a pipeline that ticked alone."""
    fx_api.latest = date(2023, 9, 29)
    faulted, clean = fx_pipeline("t"), fx_pipeline("c")
    at_once(faulted.tick, faulted.tick, clean.tick)
    assert rates(run_sql, faulted) == rates(run_sql, clean) != []
