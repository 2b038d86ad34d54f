"""tf/glue_tables.tf.json is generated from the schema declarations and must stay in step."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from totesys_etl.schema import API_FACTS, DIM_DATE, EVENT_FACTS, FACTS, STATE_TABLES, model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("glue_tables", ROOT / "tf/scripts/generate_glue_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_file_is_what_the_schema_generates(generator):
    checked_in = (ROOT / "tf/glue_tables.tf.json").read_text(encoding="utf-8")
    assert checked_in == generator.render(), "run .venv/bin/python tf/scripts/generate_glue_tables.py"
    assert generator.main(["--check"]) == 0


def test_every_parquet_table_is_registered_with_its_declared_columns(generator):
    tables = json.loads(generator.render())["locals"]["glue_tables"]
    lake = (*FACTS, DIM_DATE, *STATE_TABLES, *API_FACTS, *EVENT_FACTS)
    assert set(tables) == {t.name for t in lake}
    for table in lake:
        assert [c["name"] for c in tables[table.name]["columns"]] == table.arrow_schema.names
    sales = {c["name"]: c for c in tables["fact_sales_order"]["columns"]}
    assert "sales_record_id" not in sales  # the surrogate key is the warehouse's, not the lake's
    assert sales["unit_price"]["type"] == "decimal(10,2)"
    assert sales["created_time"]["type"] == "bigint"
    assert {c["name"]: c["type"] for c in tables["fact_payment"]["columns"]}["payment_amount"] == "decimal(38,10)"
    assert {c["name"]: c["type"] for c in tables["etl_src_staff"]["columns"]}["last_updated"] == "timestamp"
    rates = {c["name"]: c["type"] for c in tables["fact_exchange_rate"]["columns"]}
    assert rates == {"rate_date": "date", "currency_id": "int", "units_per_gbp": "decimal(38,10)", "carried": "boolean"}


def test_a_column_added_to_the_declaration_makes_the_file_stale(generator, monkeypatch):
    fact = FACTS[0]
    grown = model.Table(name=fact.name, kind=fact.kind, key=fact.key, source=fact.source,
                        columns=(*fact.columns, model.Column("discount", "numeric(10,2)", True)),
                        version_key=fact.version_key, description=fact.description)
    monkeypatch.setattr(generator, "LAKE_TABLES", (grown, *generator.LAKE_TABLES[1:]))
    columns = json.loads(generator.render())["locals"]["glue_tables"][fact.name]["columns"]
    assert columns[-1] == {"name": "discount", "type": "decimal(10,2)", "comment": "may be null"}
    assert generator.main(["--check"]) == 1


def test_a_type_with_no_glue_equivalent_is_refused(generator):
    import pyarrow as pa

    with pytest.raises(ValueError):
        generator.glue_type(pa.list_(pa.int32()))


def _duplicates(names: list[str]) -> set[str]:
    """Names that occur twice, compared as Athena does (case-insensitively)."""
    lowered = [n.lower() for n in names]
    return {n for n in lowered if lowered.count(n) > 1}


def test_no_table_has_a_column_twice_counting_its_partition_keys(generator):
    """Athena refuses every query on a table whose partition key repeats a data column's name."""
    document = json.loads(generator.render())["locals"]
    partition_keys = [k["name"] for k in document["glue_partition_keys"]]
    assert partition_keys, "the lake is partitioned by date, so every table has partition keys"
    repeated = {name: _duplicates([c["name"] for c in table["columns"]] + partition_keys)
                for name, table in document["glue_tables"].items()}
    assert {name: d for name, d in repeated.items() if d} == {}


def test_partition_keys_follow_the_lakes_key_layout(generator):
    """Renamed keys still project onto `<table>/year=YYYY/month=MM/day=DD/` (lake.table_key)."""
    from totesys_etl.lake import table_key

    keys = json.loads(generator.render())["locals"]["glue_partition_keys"]
    levels = table_key("fact_sales_order", "20250307T101500000000Z", "parquet").split("/")[1:-1]
    assert [f"{k['path']}=" for k in keys] == [level.split("=")[0] + "=" for level in levels]
    assert [len(level.split("=")[1]) for level in levels] == [k["digits"] for k in keys]
    glue_tf = (ROOT / "tf/glue.tf").read_text(encoding="utf-8")
    assert "local.glue_partition_keys" in glue_tf  # glue.tf declares what the generator wrote
