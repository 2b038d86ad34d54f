"""`load_snapshot`: the real totesys snapshot, loaded as `seed` builds its tables."""
from __future__ import annotations

import gzip
import json
import re
from datetime import datetime
from decimal import Decimal

import pytest
from pg8000.native import identifier

from totesys_etl.errors import ConfigurationError
from totesys_etl.local.source.snapshot import SNAPSHOT, load_snapshot
from totesys_etl.schema import SOURCE_TABLES
from totesys_etl.schema.source import SOURCE_FOREIGN_KEYS


def readme_counts() -> dict[str, int]:
    """The row counts the snapshot's README states (`| table | 1,234 |`)."""
    rows = re.findall(r"^\| (\w+) \| ([\d,]+) \|$", (SNAPSHOT / "README.md").read_text(), re.MULTILINE)
    return {table: int(count.replace(",", "")) for table, count in rows}


@pytest.fixture
def loaded(source):
    return source, load_snapshot(source.admin_url, SNAPSHOT)


def test_row_counts_match_the_snapshot_readme(loaded, run_sql):
    source, counts = loaded
    expected = readme_counts()
    assert len(expected) == 10 and expected["address"] == 30 and expected["transaction"] == 15_815
    assert counts == {**expected, "payment": 0}
    for table in SOURCE_TABLES:  # the reader sees every table, payment empty
        assert run_sql(source.reader_url, f"SELECT count(*) FROM {identifier(table.name)}") == [[counts[table.name]]]


def test_values_arrive_exactly(loaded, run_sql):
    source, _ = loaded
    assert run_sql(source.admin_url, "SELECT item_code, item_unit_price, created_at FROM purchase_order "
                                     "WHERE purchase_order_id = 1") == \
        [["ZDOI5EA", Decimal("361.39"), datetime(2022, 11, 3, 14, 20, 52, 187000)]]
    with gzip.open(SNAPSHOT / "address.jsonl.gz", "rt") as f:
        first = json.loads(f.readline())
    row = run_sql(source.admin_url, "SELECT address_line_2, district, postal_code, phone FROM address "
                                    "WHERE address_id = :i", i=first["address_id"])
    assert row == [[first["address_line_2"], first["district"], first["postal_code"], first["phone"]]]
    # rows keep their own ids, whatever order the file lists them in
    with gzip.open(SNAPSHOT / "design.jsonl.gz", "rt") as f:
        design = json.loads(f.readline())
    assert design["design_id"] != 1
    assert run_sql(source.admin_url, "SELECT design_name, file_name FROM design WHERE design_id = :i",
                   i=design["design_id"]) == [[design["design_name"], design["file_name"]]]


def test_keys_indexes_and_sequences_as_seed_makes_them(loaded, run_sql):
    source, _ = loaded
    url = source.admin_url
    assert run_sql(url, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated "
                        "AND connamespace = 'public'::regnamespace") == [[len(SOURCE_FOREIGN_KEYS)]]
    indexed = {r[0] for r in run_sql(url, "SELECT tablename FROM pg_indexes WHERE indexdef LIKE '%(last_updated)'")}
    assert indexed == {t.name for t in SOURCE_TABLES}
    max_id = run_sql(url, "SELECT max(sales_order_id) FROM sales_order")[0][0]
    assert run_sql(url, "SELECT nextval(pg_get_serial_sequence('sales_order', 'sales_order_id'))") == [[max_id + 1]]
    assert run_sql(url, "SELECT nextval(pg_get_serial_sequence('payment', 'payment_id'))") == [[1]]


def test_loading_again_replaces_the_tables(loaded, run_sql):
    source, counts = loaded
    run_sql(source.admin_url, "UPDATE currency SET currency_code = 'CHF' WHERE currency_id = 1")
    assert load_snapshot(source.admin_url, SNAPSHOT) == counts
    assert run_sql(source.admin_url, "SELECT currency_code FROM currency WHERE currency_id = 1") == [["GBP"]]


def test_a_file_missing_a_column_fails_and_changes_nothing(loaded, tmp_path, run_sql):
    source, counts = loaded
    with gzip.open(tmp_path / "currency.jsonl.gz", "wt") as f:
        f.write(json.dumps({"currency_id": 1, "currency_code": "GBP", "created_at": "2022-11-03T14:20:49.962000"})
                + "\n")
    with pytest.raises(ConfigurationError, match="last_updated"):
        load_snapshot(source.admin_url, tmp_path)
    assert run_sql(source.admin_url, "SELECT count(*) FROM sales_order") == [[counts["sales_order"]]]
    with pytest.raises(ConfigurationError):
        load_snapshot(source.admin_url, tmp_path / "absent")
