"""The FX part of an ingest run (ingest/fx.py) against the local stand-in (a real HTTP server on
loopback) and moto's server: what one run lands, and what the next run resumes from.

Issue 34 item 9 (contract §9): a currency the API does not serve, a 404 for it or a symbol missing
from an answer, stops that currency alone; the others keep loading day by day; the ERROR line, the
manifest and `status` (through the FX source's failure record) name the missing code.
"""
from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from totesys_etl import failures
from totesys_etl.adapters import s3
from totesys_etl.config import Settings
from totesys_etl.ingest import fx
from totesys_etl.logs import StageLog

#: The stand-in serves USD, EUR, CHF and JPY; XYZ it does not.
CURRENCIES = {"GBP": 1, "USD": 2, "EUR": 3, "XYZ": 4}
CODES = {v: k for k, v in CURRENCIES.items()}


@pytest.fixture
def fx_env(pipeline_env, fx_api, monkeypatch):
    monkeypatch.setenv("TOTESYS_FX_API_URL", fx_api.url)
    return Settings.from_env()


def landed(settings: Settings, outcome: fx.FxOutcome) -> dict[str, list[tuple[str, str, str]]]:
    """The run's fx_rate CSV by currency code: (day, rate, carried)."""
    if outcome.entry is None:
        return {}
    text = s3.get_bytes(settings.ingest_bucket, outcome.entry["key"]).decode()
    by_code: dict[str, list] = {}
    for row in csv.DictReader(io.StringIO(text)):
        by_code.setdefault(CODES[int(row["currency_id"])], []).append(
            (row["rate_date"], row["units_per_gbp"], row["carried"]))
    return by_code


def run(settings, previous: fx.FxMark, today: date, currencies=CURRENCIES, earliest=date(2024, 1, 2),
        run_id="20240301T000000000000Z") -> fx.FxOutcome:
    return fx.fetch(settings, run_id, fx.FxInputs(currencies, earliest), previous, StageLog("ingest"), today=today)


def test_a_currency_the_api_does_not_serve_stops_alone_and_the_others_load(fx_env, fx_api, logs):
    fx_api.latest = date(2024, 5, 31)
    outcome = run(fx_env, fx.FxMark(), date(2024, 5, 31))
    rows = landed(fx_env, outcome)
    clean = landed(fx_env, run(fx_env, fx.FxMark(), date(2024, 5, 31), {"GBP": 1, "USD": 2, "EUR": 3},
                               run_id="20240301T000000000001Z"))
    assert set(rows) == {"GBP", "USD", "EUR"} and rows == clean  # every day of the others, as without XYZ
    assert rows["USD"][-1][0] == "2024-05-31"
    assert outcome.fields() == {"fx": "2024-05-31", "fx_behind": {"XYZ": None}, "fx_unavailable": ["XYZ"]}
    errors = [line for line in logs if line["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["error_kind"] == "fx_unavailable"
    assert "FX rates of XYZ stopped: the FX API does not serve it" in errors[0]["message"]
    assert errors[0]["missing_currencies"] == ["XYZ"]
    assert "XYZ" in failures.newest(fx_env.ingest_bucket, "fx")["reason"]  # what `status` shows

    # The next run: the others go on from their day; XYZ is asked alone, once, from its own start.
    fx_api.latest, fx_api.requests[:] = date(2024, 6, 7), []
    later = run(fx_env, outcome.mark, date(2024, 6, 7), run_id="20240302T000000000000Z")
    assert landed(fx_env, later)["USD"][-1][0] == "2024-06-07" and "XYZ" not in landed(fx_env, later)
    assert later.fields()["fx_behind"] == {"XYZ": None} and later.fields()["fx_unavailable"] == ["XYZ"]
    assert [r for r in fx_api.requests if "XYZ" in r] == ["/2024-01-02..2024-06-07?base=GBP&symbols=XYZ"]


def test_a_symbol_missing_from_an_answer_stops_it_there_and_it_catches_up_once_served(fx_env, fx_api, logs):
    """The second page (from Friday 1 March: pages are 60 days) lacks EUR on its first day: EUR stops
    at the published day before; USD goes on to the end. Served again, EUR resumes at its own gap,
    alone, and rejoins: equal to a clean run."""
    fx_api.latest = date(2024, 5, 31)
    currencies = {"GBP": 1, "USD": 2, "EUR": 3}
    fx_api.set_fault("missing", times=1, after=1)
    first = run(fx_env, fx.FxMark(), date(2024, 5, 31), currencies, earliest=date(2024, 1, 1))
    rows = landed(fx_env, first)
    assert rows["USD"][-1][0] == "2024-05-31" and rows["EUR"][-1][0] == "2024-02-29"
    behind = first.fields()["fx_behind"]
    assert list(behind) == ["EUR"] and behind["EUR"] == rows["EUR"][-1][0]
    assert first.fields()["fx_unavailable"] == ["EUR"]
    errors = [line for line in logs if line["level"] == "ERROR"]
    assert [e["missing_currencies"] for e in errors] == [["EUR"]]

    fx_api.set_fault(None)
    fx_api.latest = date(2024, 6, 7)
    second = run(fx_env, first.mark, date(2024, 6, 7), currencies, run_id="20240302T000000000000Z")
    assert second.fields() == {"fx": "2024-06-07"}  # caught up: nobody behind, nothing unavailable
    clean = run(fx_env, fx.FxMark(), date(2024, 6, 7), currencies, earliest=date(2024, 1, 1),
                run_id="20240303T000000000000Z")
    merged = {code: sorted(set(landed(fx_env, first).get(code, []) + landed(fx_env, second).get(code, [])))
              for code in currencies}
    assert merged == {code: sorted(r) for code, r in landed(fx_env, clean).items()}


def test_a_page_nested_too_deep_fails_the_fx_part_alone_and_its_body_is_quarantined(fx_env, fx_api, logs):
    """The second page's rates 50,000 arrays deep (100 KB, under the body cap): json raises
    RecursionError, not a ValueError, which stopped the whole ingest run. Contract §9: a body that is
    not the expected shape fails the FX part alone, with one fx_unavailable line and the body kept."""
    fx_api.latest = date(2024, 5, 31)
    fx_api.set_fault("nested", times=1, after=1)
    currencies = {"GBP": 1, "USD": 2, "EUR": 3}
    outcome = run(fx_env, fx.FxMark(), date(2024, 5, 31), currencies, earliest=date(2024, 1, 1))
    rows = landed(fx_env, outcome)
    assert rows["USD"][-1][0] == rows["EUR"][-1][0] == outcome.fields()["fx"] < "2024-05-31"  # stopped at the gap
    errors = [line for line in logs if line["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["error_kind"] == "fx_unavailable"
    assert errors[0]["message"].endswith("the FX API's answer is not the contract's shape: the body is nested too "
                                         "deep to decode")
    held = sorted(o["key"] for o in s3.list_objects(fx_env.processed_bucket, "quarantine/20240301T000000000000Z/"))
    page = "fx_rate_20240301T000000000000Z.page2.json"
    assert [k.rsplit("/", 1)[1] for k in held] == [page, f"{page}.reason.json"]
    body = s3.get_bytes(fx_env.processed_bucket, held[0])
    assert body.startswith(b'{"amount":') and b"[" * 50_000 in body  # the answer as it came
    fx_api.set_fault(None)  # served again: the next run resumes from the gap
    later = run(fx_env, outcome.mark, date(2024, 5, 31), currencies, run_id="20240302T000000000000Z")
    assert later.fields() == {"fx": "2024-05-31"}


def test_the_mark_round_trips_through_a_manifest():
    from totesys_etl.ingest.watermark import Watermark

    outcome = fx.FxOutcome(None, 0, fx.FxMark("2024-05-31", {"XYZ": None, "EUR": "2024-02-29"}), ("XYZ",))
    manifest = {"run_id": "20240301T000000000000Z", "stage": "ingest", "previous_run_id": None,
                "snapshot": "10:10:", "cutoff": "2024-01-01 00:00:00.000000", "files": {}, "rows": {},
                **outcome.fields()}
    watermark = Watermark.from_manifest(manifest)
    assert (watermark.fx, dict(watermark.fx_behind)) == ("2024-05-31", {"EUR": "2024-02-29", "XYZ": None})
    with pytest.raises(ValueError):
        fx.parse_behind({"EUR": "29 Feb"})
