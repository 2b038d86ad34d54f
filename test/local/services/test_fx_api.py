"""The local FX stand-in (local/services/fx_api.py): its dataset, its answers and its switches."""
import json
from datetime import date

import urllib3

from totesys_etl.local.services.fx_api import DATASET, generate_dataset, load_dataset


def get(fx_api, path):
    response = urllib3.request("GET", fx_api.url + path)
    return response.status, json.loads(response.data)


def test_the_shipped_dataset_is_the_generated_one_working_days_only():
    assert DATASET.read_text() == generate_dataset()
    days = load_dataset()
    assert all(d.weekday() < 5 for d in days) and date(2024, 12, 25) not in days
    assert set(days[date(2024, 1, 8)]) >= {"USD", "EUR"}


def test_answers_in_pages_of_at_most_page_days_with_the_datasets_digits(fx_api):
    status, body = get(fx_api, "/2024-01-01..2024-12-31?base=GBP&symbols=USD")
    assert status == 200 and body["base"] == "GBP"
    assert body["start_date"] == "2023-12-29"  # 1 January is a holiday: from the working day before
    assert date.fromisoformat(body["end_date"]) < date(2024, 3, 1)  # 60-day pages in tests
    raw = urllib3.request("GET", fx_api.url + "/2024-01-08..2024-01-08?base=GBP&symbols=USD").data.decode()
    assert f'"USD":{load_dataset()[date(2024, 1, 8)]["USD"]}' in raw


def test_errors_are_the_documented_ones(fx_api):
    assert get(fx_api, "/2024-01-01..2024-01-31?base=GBP&symbols=XXX")[0] == 404
    assert get(fx_api, "/2024-01-01..2024-01-31?base=USD&symbols=EUR")[0] == 422
    assert get(fx_api, "/1990-01-01..1990-01-31?base=GBP&symbols=EUR")[0] == 404
    assert get(fx_api, "/latest")[0] == 404


def test_faults_are_switched_over_http(fx_api):
    assert urllib3.request("POST", fx_api.url + "/_faults", json={"mode": "500", "times": 1}).status == 200
    assert get(fx_api, "/2024-01-08..2024-01-09?base=GBP&symbols=EUR")[0] == 500
    assert get(fx_api, "/2024-01-08..2024-01-09?base=GBP&symbols=EUR")[0] == 200
    urllib3.request("POST", fx_api.url + "/_faults", json={"mode": "429", "retry_after": 7})
    response = urllib3.request("GET", fx_api.url + "/2024-01-08..2024-01-09?base=GBP&symbols=EUR", retries=False)
    assert response.status == 429 and response.headers["Retry-After"] == "7"
    assert urllib3.request("DELETE", fx_api.url + "/_faults").status == 200
    assert get(fx_api, "/2024-01-08..2024-01-09?base=GBP&symbols=EUR")[0] == 200
    assert urllib3.request("POST", fx_api.url + "/_faults", json={"mode": "nope"}).status == 400
