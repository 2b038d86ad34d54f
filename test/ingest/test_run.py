"""The ingest run against a real PostgreSQL (read-only role) and moto's S3."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pg8000.native
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.config import Settings
from totesys_etl.errors import LakeUnavailable
from totesys_etl.ingest import watermark
from totesys_etl.ingest.run import ingest
from totesys_etl.runs import RunResult
from totesys_etl.schema import SOURCE_TABLES, source_table


ROWS_PER_TABLE = 3  # what the `totesys` fixture inserts


def run() -> RunResult:
    return ingest(Settings.from_env())


def csv_rows(ingested, result, table: str) -> list[dict]:
    body = ingested.body(lake.table_key(table, result.run_id, "csv")).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body, newline="")))


def test_first_run_reads_everything_and_writes_its_manifest_last(totesys, pipeline_env, ingested, logs):
    result = run()
    assert result.rows == {t.name: ROWS_PER_TABLE for t in SOURCE_TABLES}
    assert result.files == 11
    manifest = ingested.manifest(result.run_id)
    assert manifest["previous_run_id"] is None and manifest["stage"] == "ingest"
    assert watermark.Snapshot.parse(manifest["snapshot"])
    for table in SOURCE_TABLES:
        entry = manifest["files"][table.name]
        assert entry == {"key": lake.table_key(table.name, result.run_id, "csv"), "rows": ROWS_PER_TABLE,
                         "columns": table.column_names}
        rows = csv_rows(ingested, result, table.name)
        assert [int(r[f"{table.name}_id"]) for r in rows] == [1, 2, 3]
        assert list(rows[0]) == table.column_names
    # The manifests are the ingestor's only state: nothing else is written.
    assert ingested.keys("_state/") == []
    tables = [line for line in logs if line["message"] == "table extracted"]
    assert sorted(line["table"] for line in tables) == sorted(t.name for t in SOURCE_TABLES)
    assert all(line["run_id"] == result.run_id and line["stage"] == "ingest" and line["rows"] == 3
               and isinstance(line["seconds"], float) for line in tables)


def test_a_run_without_changes_writes_only_its_manifest(totesys, pipeline_env, ingested):
    first = run()
    files_before = ingested.table_keys()
    second = run()
    assert second.files == 0 and set(second.rows.values()) == {0} and len(second.rows) == 11
    assert ingested.table_keys() == files_before
    manifest = ingested.manifest(second.run_id)
    assert manifest["files"] == {} and manifest["previous_run_id"] == first.run_id
    assert second.run_id > first.run_id


def test_inserts_and_updates_are_picked_up_once(totesys, pipeline_env, ingested):
    run()
    totesys.insert_generated(source_table("sales_order"), 4, 2)
    totesys.run("UPDATE staff SET first_name = 'Renamed', last_updated = LOCALTIMESTAMP WHERE staff_id = 2")
    second = run()
    assert second.rows["sales_order"] == 2 and second.rows["staff"] == 1 and second.files == 2
    assert sum(second.rows.values()) == 3
    assert [r["sales_order_id"] for r in csv_rows(ingested, second, "sales_order")] == ["4", "5"]
    staff = csv_rows(ingested, second, "staff")
    assert [(r["staff_id"], r["first_name"]) for r in staff] == [("2", "Renamed")]
    assert run().files == 0


def test_a_late_commit_arrives_in_the_run_after_it_commits_and_only_once(totesys, source, pipeline_env,
                                                                         ingested):
    run()
    late = pg8000.native.Connection(**parse_url(source.admin_url))
    try:
        late.run("BEGIN")
        # One write stamped now (inside the overlap window), one stamped two hours ago: only the
        # previous snapshot's in-progress list can find the second once it commits.
        late.run("UPDATE address SET city = 'Late now', last_updated = LOCALTIMESTAMP WHERE address_id = 1")
        late.run("UPDATE address SET city = 'Late old', last_updated = LOCALTIMESTAMP - interval '2 hours' "
                 "WHERE address_id = 2")
        xid = int(late.run("SELECT pg_current_xact_id()::text")[0][0])
        during = run()
        assert during.rows["address"] == 0
        assert xid in watermark.XidSet.parse(ingested.manifest(during.run_id)["in_progress"])
        still_open = run()  # the transaction outlives two runs: each run hands its xip list on
        assert still_open.rows["address"] == 0
        late.run("COMMIT")
    finally:
        late.close()
    after = run()
    assert after.rows == {**{t.name: 0 for t in SOURCE_TABLES}, "address": 2}
    assert sorted((r["address_id"], r["city"]) for r in csv_rows(ingested, after, "address")) == [
        ("1", "Late now"), ("2", "Late old")]
    assert run().files == 0


def test_writes_inside_savepoints_of_a_late_transaction_are_not_lost(totesys, source, pipeline_env, ingested):
    """A savepoint's rows carry a subtransaction id, which the previous snapshot does not list as
    in progress; they must still arrive once their transaction commits, recent or old-stamped."""
    run()
    late = pg8000.native.Connection(**parse_url(source.admin_url))
    try:
        late.run("BEGIN")
        late.run("UPDATE address SET city = 'Top level' WHERE address_id = 1")
        late.run("SAVEPOINT s1")
        late.run("UPDATE address SET city = 'In a savepoint', last_updated = LOCALTIMESTAMP WHERE address_id = 2")
        late.run("RELEASE SAVEPOINT s1")
        late.run("SAVEPOINT s2")
        late.run("UPDATE staff SET first_name = 'Old stamp', last_updated = LOCALTIMESTAMP - interval '3 hours' "
                 "WHERE staff_id = 1")
        late.run("RELEASE SAVEPOINT s2")
        # A later transaction commits meanwhile, so the snapshot's xmax passes the savepoints' ids:
        # they are below it and not in its list, the case `pg_visible_in_snapshot` gets wrong.
        other = pg8000.native.Connection(**parse_url(source.admin_url))
        other.run("UPDATE department SET manager = 'Other' WHERE department_id = 1")
        other.close()
        during = run()
        assert (during.rows["address"], during.rows["staff"], during.rows["department"]) == (0, 0, 1)
        late.run("COMMIT")
    finally:
        late.close()
    after = run()
    assert sorted((r["address_id"], r["city"]) for r in csv_rows(ingested, after, "address"))[-1] == (
        "2", "In a savepoint")
    assert [(r["staff_id"], r["first_name"]) for r in csv_rows(ingested, after, "staff")] == [("1", "Old stamp")]
    assert run().files == 0


def test_text_round_trips_byte_for_byte_and_null_stays_apart_from_empty(totesys, pipeline_env, ingested):
    texts = ['He said "hi", then left', "a,b,,c", "line 1\nline 2\r\nline 3", "emoji 🚀 and ünïcödé ø",
             "007", '"', "\\N", " padded ", "NULL", "'single'; DROP TABLE x;--"]
    totesys.run("TRUNCATE address")
    for i, text in enumerate(texts, start=1):
        totesys.run("INSERT INTO address VALUES (:i, :text, :line_2, :district, :text, '0042', :text,"
                    " '+44 0', LOCALTIMESTAMP, LOCALTIMESTAMP)", i=i, text=text, line_2="" if i % 2 else None,
                    district=None if i % 2 else "")
    result = run()
    assert result.rows["address"] == len(texts)
    body = ingested.body(lake.table_key("address", result.run_id, "csv"))
    expected = totesys.run("SELECT address_id::text, address_line_1, address_line_2, district, city, "
                           "postal_code, country, phone FROM address ORDER BY address.address_id")
    strings = {c.name: pa.string() for c in source_table("address").columns}
    table = pacsv.read_csv(pa.py_buffer(body), convert_options=pacsv.ConvertOptions(
        column_types=strings, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False))
    columns = ["address_id", "address_line_1", "address_line_2", "district", "city", "postal_code", "country",
               "phone"]
    assert [list(row.values()) for row in table.select(columns).to_pylist()] == expected
    # csv module reading of the same bytes agrees on every non-NULL value, newlines included.
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert [r[1] for r in rows[1:]] == texts
    assert rows[1][2] == "" and b',"",' in body  # '' is quoted, NULL is an unquoted empty field


def test_corrupt_newer_manifests_are_never_trusted(totesys, pipeline_env, ingested, logs):
    first = run()
    future = ["29991231T235959000003Z", "29991231T235959000002Z", "29991231T235959000001Z"]
    good = ingested.manifest(first.run_id)
    # Newest: a manifest without the fields a watermark needs; then one that is not JSON; then one
    # that parses but whose snapshot is nonsense. A key that names no run is not a manifest at all.
    ingested.put(lake.manifest_key(future[0]), json.dumps({"run_id": future[0], "files": {}}).encode())
    ingested.put(lake.manifest_key(future[1]), b"{not json")
    ingested.put(lake.manifest_key(future[2]),
                 json.dumps({**good, "run_id": future[2], "snapshot": "1:x:"}).encode())
    ingested.put("_runs/garbage.json", b"{}")
    totesys.insert_generated(source_table("currency"), 4, 1)
    second = run()
    assert ingested.manifest(second.run_id)["previous_run_id"] == first.run_id
    assert second.rows == {**{t.name: 0 for t in SOURCE_TABLES}, "currency": 1}
    skipped = [line for line in logs if line["level"] == "WARNING"]
    assert len(skipped) == 3 and {line.get("previous_run_id") for line in skipped} == set(future)


def test_a_manifest_nested_too_deep_or_too_large_is_skipped_and_never_stops_the_ingest(
        totesys, pipeline_env, ingested, logs):
    """Every ingest reads the newest manifest first: a 50 KB `[[[…` there (json raises RecursionError,
    not a ValueError) used to stop every run. A manifest over manifest.MAX_BYTES is skipped from its size
    alone, though this one is the previous run's watermark padded with blanks: trusted, it would be the
    previous run."""
    first = run()
    nested, large = (lake.run_id_at(lake.run_time(first.run_id) + timedelta(microseconds=n)) for n in (1, 2))
    ingested.put(lake.manifest_key(nested), b"[" * 50_000)
    ingested.put(lake.manifest_key(large), json.dumps({**ingested.manifest(first.run_id), "run_id": large}).encode()
                 .ljust(manifests.MAX_BYTES + 1))
    totesys.insert_generated(source_table("currency"), 4, 1)
    second = run()
    assert ingested.manifest(second.run_id)["previous_run_id"] == first.run_id
    assert second.rows == {**{t.name: 0 for t in SOURCE_TABLES}, "currency": 1}
    skipped = {line["previous_run_id"]: line["message"] for line in logs if "corrupt manifest" in line["message"]}
    assert skipped == {
        large: f"skipping a corrupt manifest: manifest _runs/{large}.json is 16,777,217 bytes, more than a manifest "
               "may be (16,777,216)",
        nested: f"skipping a corrupt manifest: manifest _runs/{nested}.json is nested too deep to decode"}


def test_a_missing_bucket_is_a_lake_error_naming_bucket_and_code(totesys, pipeline_env, monkeypatch):
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", "no-such-bucket-for-ingest")
    with pytest.raises(LakeUnavailable, match="s3://no-such-bucket-for-ingest/.*NoSuchBucket") as error:
        run()
    assert error.value.error_kind == "lake_unavailable" and "\n" not in str(error.value)


def test_a_readable_manifest_dated_in_the_future_is_never_the_previous_run(totesys, pipeline_env, ingested, logs):
    first = run()
    forged = {**ingested.manifest(first.run_id), "run_id": "29991231T235959000000Z", "snapshot": "3:3:"}
    ingested.put(lake.manifest_key(forged["run_id"]), json.dumps(forged).encode())
    totesys.insert_generated(source_table("currency"), 4, 1)
    second = run()
    assert ingested.manifest(second.run_id)["previous_run_id"] == first.run_id
    assert second.rows == {**{t.name: 0 for t in SOURCE_TABLES}, "currency": 1}
    assert any("dated after this run" in line["message"] for line in logs if line["level"] == "WARNING")


def test_a_source_whose_transaction_ids_went_backwards_is_read_again_in_full(totesys, pipeline_env, ingested,
                                                                             logs):
    first = run()
    just_after = lake.run_id_at(datetime.strptime(first.run_id, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
                                + timedelta(microseconds=1))
    restored = {**ingested.manifest(first.run_id), "run_id": just_after, "snapshot": "9000000000:9000000000:"}
    ingested.put(lake.manifest_key(restored["run_id"]), json.dumps(restored).encode())
    again = run()
    assert again.rows == {t.name: ROWS_PER_TABLE for t in SOURCE_TABLES}
    assert ingested.manifest(again.run_id)["previous_run_id"] is None
    assert any("ids went back" in line["message"] for line in logs if line["level"] == "WARNING")
