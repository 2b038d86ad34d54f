from datetime import date

from totesys_etl.calendar import date_range, date_rows


def test_date_rows_follow_iso_weeks_and_quarters():
    rows = date_rows([date(2024, 12, 29), date(2024, 2, 29), date(2024, 12, 29)]).to_pylist()
    assert rows == [
        {"date_id": date(2024, 2, 29), "year": 2024, "month": 2, "day": 29, "day_of_week": 4,
         "day_name": "Thursday", "month_name": "February", "quarter": 1},
        {"date_id": date(2024, 12, 29), "year": 2024, "month": 12, "day": 29, "day_of_week": 7,
         "day_name": "Sunday", "month_name": "December", "quarter": 4},
    ]


def test_date_range_is_inclusive():
    assert date_range(date(2024, 2, 28), date(2024, 3, 1)) == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]
