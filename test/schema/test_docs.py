from pathlib import Path

from totesys_etl.schema import docs


def test_data_dictionary_is_current():
    committed = Path(__file__).parents[2] / "readme_files" / "data-dictionary.md"
    regenerate = "python -m totesys_etl.schema.docs > readme_files/data-dictionary.md"
    assert committed.read_text() == docs.render(), f"stale: run {regenerate}"


def test_data_dictionary_names_every_star_column():
    text = docs.render()
    assert "| counterparty_legal_phone_number | varchar | no | `address.phone` |" in text
    assert "| created_time | time | no | `sales_order.created_at` (time part) | dim_date.date_id |" not in text
    assert "| created_date | date | no | `sales_order.created_at` (date part) | dim_date.date_id |" in text
