"""A first read of a large table in parts (contract §4 "Parts"), read in parallel under one
exported snapshot, against a real PostgreSQL (read-only role) and moto's S3."""
from __future__ import annotations

import csv
import io

import pytest

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.config import Settings
from totesys_etl.errors import ConfigurationError
from totesys_etl.ingest import parts
from totesys_etl.ingest.run import ingest
from totesys_etl.schema import source_table

ORDERS = 1_000


def _rows(ingested, key: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(ingested.body(key).decode("utf-8"), newline="")))


def _parted_rows(ingested, manifest: dict, table: str) -> list[dict]:
    entry = manifest["files"][table]
    assert [p["key"] for p in entry["parts"]] == [lake.part_key(table, manifest["run_id"], "csv", i)
                                                  for i in range(len(entry["parts"]))]
    rows = []
    for part in entry["parts"]:
        got = _rows(ingested, part["key"])
        assert len(got) == part["rows"]
        rows += got
    assert entry["rows"] == len(rows)
    return rows


@pytest.fixture
def big_orders(totesys):
    totesys.insert_generated(source_table("sales_order"), 4, ORDERS - 3)
    return totesys


def test_a_large_first_read_is_written_in_parts_and_small_tables_stay_one_file(
        big_orders, pipeline_env, ingested, monkeypatch):
    monkeypatch.setenv(parts.PART_ROWS_VARIABLE, "300")
    result = ingest(Settings.from_env())
    manifest = ingested.manifest(result.run_id)
    entry = manifest["files"]["sales_order"]
    assert len(entry["parts"]) == 4 and entry["rows"] == ORDERS == result.rows["sales_order"]
    ids = [int(r["sales_order_id"]) for r in _parted_rows(ingested, manifest, "sales_order")]
    assert ids == list(range(1, ORDERS + 1))  # each row once, parts in key order
    accepted, rejected = manifests.entries(manifest, result.run_id, {"sales_order", "design"}, "csv")
    assert not rejected or all(r.table != "sales_order" for r in rejected)
    assert [(e.part, e.parts) for e in accepted if e.table == "sales_order"] == [(i, 4) for i in range(4)]
    assert manifest["files"]["design"] == {"key": lake.table_key("design", result.run_id, "csv"), "rows": 3,
                                           "columns": source_table("design").column_names}
    assert not any(k.startswith("sales_order/") and ".part" not in k for k in ingested.table_keys())
    # The next (ordinary) run ships a change as one file, whatever the setting.
    big_orders.run("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = LOCALTIMESTAMP "
                   "WHERE sales_order_id IN (1, 999)")
    second = ingest(Settings.from_env())
    assert ingested.manifest(second.run_id)["files"]["sales_order"]["key"] == lake.table_key(
        "sales_order", second.run_id, "csv")


def test_parts_read_under_one_snapshot_see_nothing_a_writer_commits_meanwhile(big_orders, pipeline_env, ingested,
                                                                              monkeypatch):
    """Once the run's snapshot is exported, and again after the first part is read, a transaction
    updates a row in every part and inserts rows. Every part was read under the run's snapshot:
    none of it shows, every id is there once, and the next run ships exactly what they wrote."""
    monkeypatch.setenv(parts.PART_ROWS_VARIABLE, "250")
    monkeypatch.setattr(parts, "PART_READERS", 2)
    export, one, written = parts.export_snapshot, parts.Readers._one, []

    def write(first_id: int) -> None:
        written.append(first_id)
        big_orders.run("UPDATE sales_order SET units_sold = -1, last_updated = LOCALTIMESTAMP "
                       "WHERE sales_order_id IN (1, 250, 251, 500, 501, 750, 751, 1000)")
        big_orders.insert_generated(source_table("sales_order"), first_id, 5)

    def export_then_write(conn):
        snapshot = export(conn)
        write(ORDERS + 1)  # commits before any reader has imported the snapshot
        return snapshot

    def one_then_write(self, conn, job, number):
        one(self, conn, job, number)
        if len(written) == 1:
            write(ORDERS + 6)

    monkeypatch.setattr(parts, "export_snapshot", export_then_write)
    monkeypatch.setattr(parts.Readers, "_one", one_then_write)
    first = ingest(Settings.from_env())
    assert len(written) == 2
    manifest = ingested.manifest(first.run_id)
    rows = _parted_rows(ingested, manifest, "sales_order")
    assert sorted(int(r["sales_order_id"]) for r in rows) == list(range(1, ORDERS + 1))
    assert not [r for r in rows if r["units_sold"] == "-1"]
    monkeypatch.setattr(parts, "export_snapshot", export)
    monkeypatch.setattr(parts.Readers, "_one", one)
    second = ingest(Settings.from_env())
    shipped = _rows(ingested, ingested.manifest(second.run_id)["files"]["sales_order"]["key"])
    changed = [1, 250, 251, 500, 501, 750, 751, 1000, *range(ORDERS + 1, ORDERS + 11)]
    assert sorted(int(r["sales_order_id"]) for r in shipped) == changed


def test_a_table_at_or_under_the_limit_is_one_file(big_orders, pipeline_env, ingested, monkeypatch):
    monkeypatch.setenv(parts.PART_ROWS_VARIABLE, str(ORDERS))
    result = ingest(Settings.from_env())
    assert ingested.manifest(result.run_id)["files"]["sales_order"]["rows"] == ORDERS
    assert "parts" not in ingested.manifest(result.run_id)["files"]["sales_order"]


@pytest.mark.parametrize("text", ["0", "-5", "many", "1.5"])
def test_a_bad_part_size_is_a_configuration_error(text):
    with pytest.raises(ConfigurationError, match="TOTESYS_PART_ROWS"):
        parts.part_rows({parts.PART_ROWS_VARIABLE: text})
    assert parts.part_rows({}) == parts.DEFAULT_PART_ROWS
