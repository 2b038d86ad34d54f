"""Run manifests: written create-only, read back only through the one parser, entries trusted by layout."""
import json

import pytest
from botocore.response import StreamingBody

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.errors import EtlError, InvalidInput

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
    (b"[" * 50_000, "nested too deep to decode"),  # 50 KB; json raises RecursionError, not a ValueError
    (b'{"run_id": "%s", "files": ' % RUN.encode() + b'{"a": ' * 50_000, "nested too deep to decode"),
    (b'{"run_id": "\xff"}', "not JSON: 'utf-8' codec"),
])
def test_corrupt_manifests_are_invalid_input(body, reason):
    with pytest.raises(InvalidInput, match=reason):
        manifests.parse(body, RUN)


def _padded(manifest: dict, size: int) -> bytes:
    """`manifest` as JSON padded with blanks to `size` bytes: valid, and readable but for its size."""
    return json.dumps(manifest).encode().ljust(size)


def test_a_manifest_over_the_cap_is_invalid_input_and_never_read(buckets, monkeypatch):
    bucket, at_cap, over = buckets[0], RUN, "20261124T071248780574Z"
    s3.put_create_only(bucket, lake.manifest_key(at_cap), _padded({"run_id": at_cap, "files": {}}, manifests.MAX_BYTES))
    s3.put_create_only(bucket, lake.manifest_key(over), _padded({"run_id": over, "files": {}}, manifests.MAX_BYTES + 1))
    assert manifests.read(bucket, at_cap) == {"run_id": at_cap, "files": {}}
    reads = []
    real_read = StreamingBody.read
    monkeypatch.setattr(StreamingBody, "read", lambda self, *a, **k: reads.append(a) or real_read(self, *a, **k))
    with pytest.raises(InvalidInput, match=f"^manifest _runs/{over}.json is 16,777,217 bytes, more than a manifest "
                                           r"may be \(16,777,216\)$"):
        manifests.read(bucket, over)
    assert reads == []  # told from the GET's Content-Length: not one byte of the body read


def test_a_manifest_over_the_cap_is_never_written(buckets):
    bucket = buckets[0]
    files = {f"t{i}": {"key": "k" * 1000, "rows": i} for i in range(manifests.MAX_BYTES // 1000)}
    with pytest.raises(EtlError, match=f"manifest _runs/{RUN}.json would be .* bytes, more than a manifest may be"):
        manifests.write(bucket, manifests.processed_manifest(RUN, files, []))
    assert not lake.manifest_exists(bucket, RUN)


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


def _parts(table, extension, *rows):
    return [{"key": lake.part_key(table, RUN, extension, i), "rows": n} for i, n in enumerate(rows)]


def test_a_table_in_parts_gives_one_entry_per_part_in_order():
    files = {"sales_order": manifests.parted_entry(_parts("sales_order", "csv", 3, 0, 5)),
             "address": {"key": lake.table_key("address", RUN, "csv"), "rows": 2}}
    accepted, rejected = manifests.entries({"files": files}, RUN, {"sales_order", "address"}, "csv")
    assert rejected == []
    assert [(e.table, e.part, e.parts, e.rows) for e in accepted] == [
        ("address", None, 1, 2), ("sales_order", 0, 3, 3), ("sales_order", 1, 3, 0), ("sales_order", 2, 3, 5)]
    assert accepted[1].key.endswith(f"sales_order_{RUN}.part00000.csv")


@pytest.mark.parametrize("entry, reason", [
    ({"rows": 8, "parts": []}, "no valid list of parts"),
    ({"rows": 8, "parts": "x"}, "no valid list of parts"),
    ({"rows": 8, "parts": _parts("sales_order", "csv", 3, 5)[::-1]}, "part 0 of 'sales_order' does not name"),
    ({"rows": 8, "parts": _parts("sales_order", "parquet", 3, 5)}, "does not name this run's part"),
    ({"rows": 8, "parts": _parts("address", "csv", 3, 5)}, "does not name this run's part"),
    ({"rows": 8, "parts": [_parts("sales_order", "csv", 3)[0], {"key": "../x.csv", "rows": 5}]}, "part 1"),
    ({"rows": 8, "parts": _parts("sales_order", "csv", 3, -5)}, "part 1 of sales_order has no valid row count"),
    ({"rows": 9, "parts": _parts("sales_order", "csv", 3, 5)}, "not the sum of its parts'"),
])
def test_a_table_in_parts_is_trusted_only_whole(entry, reason):
    accepted, rejected = manifests.entries({"files": {"sales_order": entry}}, RUN, {"sales_order"}, "csv")
    assert accepted == []
    assert len(rejected) == 1 and reason in rejected[0].reason


def test_past_the_cap_hostile_entries_are_counted_not_listed(monkeypatch):
    """A manifest of millions of hostile entries: the first MAX_LISTED_REJECTIONS are listed (keys and
    table names clipped), the rest counted; the reason and the processed manifest's entries say how many."""
    monkeypatch.setattr(manifests, "MAX_LISTED_REJECTIONS", 2)
    files = {"z" * 1000: 0, "a": 0, "b": {"key": 7}, "c": {}, "d": 0,
             "address": {"key": lake.table_key("address", RUN, "csv"), "rows": 1}}
    accepted, rejected = manifests.entries({"files": files}, RUN, {"address"}, "csv")
    assert [e.table for e in accepted] == ["address"]
    assert [(r.table, r.key) for r in rejected] == [(t, f"_runs/{RUN}.json#files/{t}") for t in ("a", "b")]
    assert rejected.more == 3
    assert manifests.rejection_reason(rejected) == (
        f"'a' is not a table this stage reads ('_runs/{RUN}.json#files/a'); 'b' is not a table this stage reads "
        f"('_runs/{RUN}.json#files/b'); and 3 more hostile entries, not listed: the quarantined manifest "
        "holds them all")
    listed = manifests.rejection_entries(rejected, RUN, "quarantined_manifest")
    assert [e.get("more") for e in listed] == [None, None, 3] and manifests.quarantined_count(listed) == 5
    monkeypatch.setattr(manifests, "MAX_LISTED_REJECTIONS", 10)
    [*_, clipped] = manifests.entries({"files": files}, RUN, {"address"}, "csv")[1]
    assert clipped.table == "z" * 200 + "… (1,000 characters)" and len(clipped.reason) < 300
    assert manifests.entries({"files": files}, RUN, {"address"}, "csv")[1].more == 0


def test_part_keys_carry_five_digits_and_refuse_numbers_outside_them():
    assert lake.part_key("payment", RUN, "parquet", 7).endswith(f"payment_{RUN}.part00007.parquet")
    with pytest.raises(ValueError):
        lake.part_key("payment", RUN, "csv", lake.MAX_PARTS)
