"""Run manifests: written create-only, read back only through the one parser, entries trusted by layout."""
import json

import pytest

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.errors import InvalidInput

RUN = "20261124T071248780573Z"


def test_manifest_round_trip_and_create_only(buckets):
    bucket = buckets[0]
    first = manifests.processed_manifest(RUN, {}, [])
    assert manifests.write(bucket, first)
    assert not manifests.write(bucket, {**first, "files": {"x": 1}})
    assert manifests.read(bucket, RUN) == first
    assert first["stage"] == "process" and first["format"] == manifests.FORMAT["process"]


def test_an_ingest_manifest_holds_its_watermark_and_the_fields_the_next_ingest_requires():
    manifest = manifests.ingest_manifest(RUN, None, {"snapshot": "5:5:", "cutoff": "2026-11-24 07:12:48.000000"},
                                         {}, {"address": 0})
    body = json.dumps(manifest).encode()
    assert manifests.parse(body, RUN, manifests.INGEST_FIELDS)["snapshot"] == "5:5:"
    with pytest.raises(InvalidInput, match="lacks cutoff"):
        manifests.parse(json.dumps({k: v for k, v in manifest.items() if k != "cutoff"}).encode(), RUN,
                        manifests.INGEST_FIELDS)


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not JSON"), (b"[1]", "not a JSON object"), (b'{"run_id": "%s"}' % RUN.encode(), "lacks files"),
    (json.dumps({"run_id": "20200101T000000000000Z", "files": {}}).encode(), "another run"),
    (json.dumps({"run_id": RUN, "files": []}).encode(), "files is not an object"),
])
def test_corrupt_manifests_are_invalid_input(body, reason):
    with pytest.raises(InvalidInput, match=reason):
        manifests.parse(body, RUN)


def test_entries_accept_only_the_layout_key_with_a_row_count():
    good = lake.table_key("address", RUN, "csv")
    manifest = {"run_id": RUN, "files": {
        "address": {"key": good, "rows": 2},
        "staff": {"key": f"staff/../../address/{RUN}.csv", "rows": 1},
        "design": {"key": "design/year=2022/month=11/day=03/design_x'; DROP TABLE design; --.csv", "rows": 1},
        "currency": {"key": lake.table_key("currency", "20221104T000000000000Z", "csv"), "rows": 1},
        "../etc/passwd": {"key": "../etc/passwd", "rows": 1},
        "payment": {"key": lake.table_key("payment", RUN, "csv"), "rows": "3"},
        "sales_order": {"key": lake.table_key("sales_order", RUN, "csv"), "rows": True},
        "transaction": ["not", "an", "object"],
    }}
    tables = {"address", "staff", "design", "currency", "payment", "sales_order", "transaction"}
    accepted, rejected = manifests.entries(manifest, RUN, tables, "csv")
    assert accepted == [manifests.FileEntry("address", good, 2)]
    assert sorted(r.table for r in rejected) == sorted(t for t in manifest["files"] if t != "address")
    by_table = {r.table: r.key for r in rejected}
    assert by_table["staff"] == f"staff/../../address/{RUN}.csv"
    assert by_table["transaction"] == f"_runs/{RUN}.json#files/transaction"
    assert "not a table this stage reads" in {r.table: r.reason for r in rejected}["../etc/passwd"]
