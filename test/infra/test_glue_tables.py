"""tf/glue_tables.tf.json is generated from the schema declarations and must stay in step."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from totesys_etl.schema import DIM_DATE, FACTS, STATE_TABLES, model

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
    lake = (*FACTS, DIM_DATE, *STATE_TABLES)
    assert set(tables) == {t.name for t in lake}
    for table in lake:
        assert [c["name"] for c in tables[table.name]["columns"]] == table.arrow_schema.names
    sales = {c["name"]: c for c in tables["fact_sales_order"]["columns"]}
    assert "sales_record_id" not in sales  # the surrogate key is the warehouse's, not the lake's
    assert sales["unit_price"]["type"] == "decimal(10,2)"
    assert sales["created_time"]["type"] == "bigint"
    assert {c["name"]: c["type"] for c in tables["fact_payment"]["columns"]}["payment_amount"] == "decimal(38,10)"
    assert {c["name"]: c["type"] for c in tables["etl_src_staff"]["columns"]}["last_updated"] == "timestamp"


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
