"""The CDC ingest run (contract §10) against a real PostgreSQL 15 slot, read as a LOGIN REPLICATION
role with SELECT only, and moto's S3: what lands in the lake, run by run."""
from __future__ import annotations

import csv
import io
import json
import os
import secrets
import subprocess  # nosec B404 - the crash test runs the handler in a process of its own
import sys
from datetime import timedelta

import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.config import Settings
from totesys_etl.errors import ConfigurationError
from totesys_etl.ingest.cdc import run as cdc_run
from totesys_etl.ingest.cdc.fold import UnchangedValueMissing
from totesys_etl.ingest.cdc.pgoutput import parse_lsn
from totesys_etl.ingest.cdc.run import SlotUnusable
from totesys_etl.ingest.cdc.settings import CdcSettings
from totesys_etl.ingest.cdc.slot import cdc_status
from totesys_etl.local.source import cdc as cdc_setup
from totesys_etl.schema import SOURCE_TABLES

ROWS_PER_TABLE = 3  # what the `totesys` fixture inserts
csv.field_size_limit(1 << 24)  # a 300 kB value is one field


@pytest.fixture
def cdc(totesys, source, pipeline_env, monkeypatch):
    """The DBA steps on the test's source (publication, REPLICA IDENTITY FULL, slot, a REPLICATION
    role), and the pipeline pointed at it in cdc mode. Yields the slot name."""
    slot, publication = f"test_{secrets.token_hex(6)}", f"pub_{secrets.token_hex(6)}"
    totesys.run("SET synchronous_commit = on")  # the local cluster's is off; decoding reads flushed WAL
    cdc_setup.prepare_tables(totesys.conn, publication)
    cdc_setup.create_slot(totesys.conn, slot)
    role, password = f"cdc_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    cdc_setup.grant_cdc_role(totesys.conn, source.name, password, role)
    admin = parse_url(source.admin_url)
    monkeypatch.setenv("TOTESYS_SOURCE_URL", f"postgresql://{role}:{password}@{admin['host']}:{admin['port']}/"
                                             f"{source.name}?sslmode=disable")
    monkeypatch.setenv("TOTESYS_SOURCE_MODE", "cdc")
    monkeypatch.setenv("TOTESYS_CDC_SLOT", slot)
    monkeypatch.setenv("TOTESYS_CDC_PUBLICATION", publication)
    yield slot
    cdc_setup.drop_slot(totesys.conn, slot)


def run(**settings):
    return cdc_run.ingest(Settings.from_env(), cdc=CdcSettings.from_env() if not settings else
                          CdcSettings(**{**CdcSettings.from_env().__dict__, **settings}))


def rows_of(ingested, run_id: str, table: str) -> list[dict]:
    key = lake.table_key(table, run_id, "csv")
    if key not in ingested.keys(key):
        return []
    return list(csv.DictReader(io.StringIO(ingested.body(key).decode("utf-8"), newline="")))


def shipped(ingested, table: str) -> list[tuple]:
    """(run_id, id, last_updated) of every version of `table` in the lake, run by run."""
    out = []
    for run_id in lake.runs_after(ingested.bucket, None):
        out += [(run_id, r[f"{table}_id"], r["last_updated"]) for r in rows_of(ingested, run_id, table)]
    return out


def test_the_first_run_is_a_snapshot_and_the_next_ships_only_what_committed_after_it(totesys, cdc, ingested):
    # Committed after the slot was made but before the snapshot: in the copy, never shipped again.
    totesys.run("UPDATE staff SET first_name = 'before snapshot' WHERE staff_id = 1")
    first = run()
    assert first.rows == {t.name: ROWS_PER_TABLE for t in SOURCE_TABLES} and first.files == 11
    manifest = ingested.manifest(first.run_id)
    assert manifest["source_mode"] == "cdc" and manifest["read"] == "snapshot"
    assert manifest["lsn_from"] == manifest["lsn_to"] and manifest["cdc_snapshot"]["snapshot"]
    assert {r["first_name"] for r in rows_of(ingested, first.run_id, "staff")} >= {"before snapshot"}

    totesys.run("UPDATE staff SET first_name = 'after' WHERE staff_id = 2")
    second = run()
    assert {t: n for t, n in second.rows.items() if n} == {"staff": 1}
    assert [(r["staff_id"], r["first_name"]) for r in rows_of(ingested, second.run_id, "staff")] == [("2", "after")]
    manifest2 = ingested.manifest(second.run_id)
    assert manifest2["previous_run_id"] == first.run_id and manifest2["lsn_from"] == manifest["lsn_to"]
    assert parse_lsn(manifest2["lsn_to"]) > parse_lsn(manifest2["lsn_from"])

    third = run()  # nothing changed: a manifest and no table file
    assert sum(third.rows.values()) == 0 and third.files == 0 and third.run_id > second.run_id
    assert ingested.manifest(third.run_id)["lsn_from"] == manifest2["lsn_to"]


def test_a_transaction_open_across_the_snapshot_arrives_once_after_it(totesys, cdc, ingested, source):
    other = pg8000.native.Connection(**parse_url(source.admin_url))
    other.run("SET synchronous_commit = on")
    other.run("BEGIN")
    other.run("UPDATE design SET design_name = 'late' WHERE design_id = 3")
    first = run()
    assert "late" not in {r["design_name"] for r in rows_of(ingested, first.run_id, "design")}
    other.run("COMMIT")
    other.close()
    second, third = run(), run()
    assert [(r["design_id"], r["design_name"]) for r in rows_of(ingested, second.run_id, "design")] == [("3", "late")]
    assert third.rows["design"] == 0
    lake_names = [r["design_name"] for run_id in lake.runs_after(ingested.bucket, None)
                  for r in rows_of(ingested, run_id, "design") if r["design_id"] == "3"]
    assert lake_names == ["design_name 3", "late"]  # the copy's version, then the late one, once


def test_versions_follow_commit_order_and_a_run_holds_one_version_per_row(totesys, cdc, ingested):
    run()
    totesys.run("UPDATE address SET city = 'first' WHERE address_id = 1")
    totesys.run("UPDATE address SET city = 'second', last_updated = '2001-01-01' WHERE address_id = 1")
    result = run()
    assert [(r["address_id"], r["city"], r["last_updated"]) for r in rows_of(ingested, result.run_id, "address")] \
        == [("1", "second", "2001-01-01 00:00:00")]  # the later commit wins whatever its stamp


def test_delete_then_reinsert(totesys, cdc, ingested):
    run()
    totesys.run("DELETE FROM payment WHERE payment_id = 2")
    deleted = run()
    entry = ingested.manifest(deleted.run_id)["files"]["deleted_row"]
    assert entry["rows"] == 1 and entry["key"] == lake.table_key("deleted_row", deleted.run_id, "csv")
    rows = list(csv.DictReader(io.StringIO(ingested.body(entry["key"]).decode(), newline="")))
    assert [(r["source_table"], r["source_id"]) for r in rows] == [("payment", "2")]
    assert rows[0]["deleted_at"][:4] >= "2026"  # the commit time
    assert deleted.rows["payment"] == 0

    totesys.run("INSERT INTO payment (payment_id, transaction_id, counterparty_id, payment_amount, currency_id, "
                "payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number, created_at, "
                "last_updated) VALUES (2, 1, 1, 9.5, 1, 1, true, '2024-01-01', 1, 2, now(), now())")
    again = run()
    assert "deleted_row" not in ingested.manifest(again.run_id)["files"]
    assert [r["payment_id"] for r in rows_of(ingested, again.run_id, "payment")] == ["2"]


def test_a_delete_and_a_reinsert_in_one_run_ship_the_row_alone(totesys, cdc, ingested):
    run()
    totesys.run("DELETE FROM currency WHERE currency_id = 1")
    totesys.run("INSERT INTO currency (currency_id, currency_code, created_at, last_updated) "
                "VALUES (1, 'EUR', now(), now())")
    totesys.run("DELETE FROM currency WHERE currency_id = 3")
    result = run()
    assert [(r["currency_id"], r["currency_code"]) for r in rows_of(ingested, result.run_id, "currency")] \
        == [("1", "EUR")]
    entry = ingested.manifest(result.run_id)["files"]["deleted_row"]
    rows = list(csv.DictReader(io.StringIO(ingested.body(entry["key"]).decode(), newline="")))
    assert [(r["source_table"], r["source_id"]) for r in rows] == [("currency", "3")]


def test_an_unchanged_300_kb_value_beside_a_changed_column_ships_whole(totesys, cdc, ingested):
    big = os.urandom(150_000).hex()  # incompressible: stored out of line, left out of the update
    totesys.run("UPDATE design SET file_location = :big WHERE design_id = 1", big=big)
    run()
    totesys.run("UPDATE design SET design_name = 'renamed' WHERE design_id = 1")
    result = run()
    row, = rows_of(ingested, result.run_id, "design")
    assert row["design_name"] == "renamed" and row["file_location"] == big


def test_the_csv_is_byte_for_byte_what_copy_writes(totesys, cdc, ingested):
    awkward = 'a "quoted", comma\r\nnewline, émoji 🎉, \\. end'
    run()
    totesys.run("UPDATE address SET address_line_2 = :a, district = '', city = '\\.', phone = ' x ' "
                "WHERE address_id = 2", a=awkward)
    totesys.run("UPDATE address SET address_line_2 = NULL WHERE address_id = 3")
    totesys.run("UPDATE purchase_order SET item_unit_price = 12345678901234567890.0123456789 "
                "WHERE purchase_order_id = 1")
    changed = run()
    # The same rows read by COPY: recreate the slot, so the next run takes a full snapshot.
    totesys.run(f"SELECT pg_drop_replication_slot('{cdc}')")
    cdc_setup.create_slot(totesys.conn, cdc)
    copied = run()  # the slot is ahead of the lake: a full snapshot by COPY
    assert ingested.manifest(copied.run_id)["read"] == "snapshot"
    for table, unchanged in (("address", {"1"}), ("purchase_order", {"2", "3"})):
        by_cdc = ingested.body(lake.table_key(table, changed.run_id, "csv"))
        by_copy = ingested.body(lake.table_key(table, copied.run_id, "csv")).split(b"\n")
        # The unchanged rows hold no line break: drop their one line each from COPY's file.
        assert by_cdc == b"\n".join(line for line in by_copy if line.split(b",")[0].decode() not in unchanged)


def test_a_bounded_run_leaves_the_rest_to_the_next_and_ships_each_change_once(totesys, cdc, ingested):
    run()
    for i in range(6):
        totesys.run("UPDATE counterparty SET delivery_contact = :c WHERE counterparty_id = :id",
                    c=f"v{i}", id=i % 3 + 1)
    results, manifests = [], []
    while not manifests or manifests[-1]["read"] == "bounded":
        assert len(results) < 10
        results.append(run(max_changes=6))  # a transaction is 3 or 4 messages: about two per run
        manifests.append(ingested.manifest(results[-1].run_id))
    assert len(results) >= 3
    assert all(a["lsn_to"] == b["lsn_from"] for a, b in zip(manifests, manifests[1:]))
    contacts = [r["delivery_contact"] for res in results for r in rows_of(ingested, res.run_id, "counterparty")]
    assert sorted(contacts) == [f"v{i}" for i in range(6)]


def test_a_crash_after_the_manifest_ships_nothing_twice(totesys, cdc, ingested, pipeline_env):
    run()
    totesys.run("UPDATE department SET manager = 'crash' WHERE department_id = 1")
    env = {**os.environ, "TOTESYS_CRASH_AT": "ingest.after_manifest"}
    crashed = subprocess.run([sys.executable, "-c", "from totesys_etl.ingest.handler import lambda_handler; "
                              "lambda_handler({})"], env=env, capture_output=True)  # nosec B603
    assert crashed.returncode == 137
    state = pg8000.native.Connection(**parse_url(os.environ["TOTESYS_SOURCE_URL"]))
    confirmed = state.run("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = :s", s=cdc)
    state.close()
    runs = lake.runs_after(ingested.bucket, None)
    assert parse_lsn(confirmed[0][0]) < parse_lsn(ingested.manifest(runs[-1])["lsn_to"])  # never advanced
    after = run()
    assert sum(after.rows.values()) == 0
    assert [v[1] for v in shipped(ingested, "department") if v[0] != runs[0]] == ["1"]


def test_a_crash_before_the_manifest_reads_the_same_changes_again(totesys, cdc, ingested):
    run()
    totesys.run("UPDATE department SET manager = 'again' WHERE department_id = 2")
    env = {**os.environ, "TOTESYS_CRASH_AT": "ingest.before_manifest"}
    crashed = subprocess.run([sys.executable, "-c", "from totesys_etl.ingest.handler import lambda_handler; "
                              "lambda_handler({})"], env=env, capture_output=True)  # nosec B603
    assert crashed.returncode == 137
    again = run()
    assert [r["manager"] for r in rows_of(ingested, again.run_id, "department")] == ["again"]


def test_a_lost_slot_stops_the_run_with_how_to_recover(totesys, cdc, ingested):
    run()
    totesys.run(f"SELECT pg_drop_replication_slot('{cdc}')")
    with pytest.raises(SlotUnusable, match=f"slot {cdc} does not exist.*pg_create_logical_replication_slot"):
        run()
    cdc_setup.create_slot(totesys.conn, cdc)
    assert ingested.manifest(run().run_id)["read"] == "snapshot"


def test_retained_wal_over_the_limit_is_an_error_line(totesys, cdc, ingested, logs):
    run()
    totesys.run("UPDATE design SET file_name = (SELECT string_agg(md5(random()::text), '') "
                "FROM generate_series(1, 60000))")  # ~2 MB a row that hardly compresses: WAL the slot keeps
    run(max_lag_bytes=1 << 20)
    lag = [line for line in logs if line.get("error_kind") == "cdc_slot_lag"]
    assert lag and lag[0]["level"] == "ERROR" and lag[0]["retained_mb"] >= 1


def test_a_dropped_column_stops_that_table_alone_and_it_catches_up_once_back(totesys, cdc, ingested, source, logs):
    """Contract §2/§10: one ERROR naming table and column per run while it lasts; every other table
    goes on and the slot advances; once the column is back the table is copied whole (announced,
    `complete`, so deletes meanwhile count), lined up with the slot so nothing arrives twice."""
    run()
    totesys.run("ALTER TABLE staff DROP COLUMN email_address")
    totesys.run("UPDATE staff SET first_name = 'lost?' WHERE staff_id = 1")
    totesys.run("UPDATE address SET city = 'goes on' WHERE address_id = 1")
    stopped = run()
    manifest = ingested.manifest(stopped.run_id)
    assert stopped.rows["staff"] == 0 and [r["city"] for r in rows_of(ingested, stopped.run_id, "address")] \
        == ["goes on"]
    assert manifest["cdc_stopped"] == {"staff": ["email_address"]}
    errors = [line for line in logs if line.get("error_kind") == "source_schema_changed"]
    assert len(errors) == 1 and errors[0]["level"] == "ERROR" and errors[0]["table"] == "staff" \
        and "email_address" in errors[0]["message"]
    assert cdc_status(Settings.from_env().source, cdc)["oldest_unread_lsn"] == manifest["lsn_to"]  # advanced

    totesys.run("DELETE FROM staff WHERE staff_id = 3")
    totesys.run("UPDATE department SET manager = 'meanwhile' WHERE department_id = 1")
    still = run()
    assert still.rows["staff"] == still.rows["deleted_row"] == 0 and still.rows["department"] == 1
    assert ingested.manifest(still.run_id)["cdc_stopped"] == {"staff": ["email_address"]}
    assert len([line for line in logs if line.get("error_kind") == "source_schema_changed"]) == 2

    totesys.run("ALTER TABLE staff ADD COLUMN email_address varchar")
    totesys.run("UPDATE staff SET email_address = 'back@x.org'")
    other = pg8000.native.Connection(**parse_url(source.admin_url))  # open across the copy: arrives after it
    other.run("SET synchronous_commit = on")
    other.run("BEGIN")
    other.run("UPDATE staff SET last_name = 'late' WHERE staff_id = 2")
    resumed = run()
    other.run("COMMIT")
    other.close()
    manifest = ingested.manifest(resumed.run_id)
    assert "cdc_stopped" not in manifest and manifest["complete"] == ["staff"]
    assert sorted((r["staff_id"], r["first_name"], r["email_address"], r["last_name"])
                  for r in rows_of(ingested, resumed.run_id, "staff")) \
        == [("1", "lost?", "back@x.org", "last_name 1"), ("2", "first_name 2", "back@x.org", "last_name 2")]
    after, idle = run(), run()
    assert [(r["staff_id"], r["last_name"]) for r in rows_of(ingested, after.run_id, "staff")] == [("2", "late")]
    assert idle.rows["staff"] == 0
    runs = lake.runs_after(ingested.bucket, None)[1:]  # after the first snapshot: no whole row of staff twice
    whole = [tuple(r.values()) for run_id in runs for r in rows_of(ingested, run_id, "staff")]
    assert len(whole) == len(set(whole)) == 3


def test_a_first_snapshot_without_a_column_copies_the_other_tables_and_a_manifest_naming_it_wrongly_is_corrupt(
        totesys, cdc, ingested, logs):
    totesys.run("ALTER TABLE design RENAME COLUMN file_name TO file")
    totesys.run("ALTER TABLE currency ADD COLUMN note text DEFAULT 'new'")  # ignored, and recorded (contract §2)
    first = run()
    manifest = ingested.manifest(first.run_id)
    assert manifest["read"] == "snapshot" and first.rows["design"] == 0 and first.rows["staff"] == ROWS_PER_TABLE
    assert manifest["cdc_stopped"] == {"design": ["file_name"]} and "design" not in manifest["complete"]
    assert manifest["new_columns"] == {"currency": ["note"], "design": ["file"]}  # a rename: one gone, one new
    assert "note" not in rows_of(ingested, first.run_id, "currency")[0]
    totesys.run("ALTER TABLE design RENAME COLUMN file TO file_name")
    resumed = run()
    assert resumed.rows["design"] == ROWS_PER_TABLE and ingested.manifest(resumed.run_id)["complete"] == ["design"]
    assert ingested.manifest(resumed.run_id)["new_columns"] == {"currency": ["note"]}

    later = lake.run_id_at(lake.run_time(resumed.run_id) + timedelta(microseconds=1))
    ingested.put(lake.manifest_key(later), json.dumps({  # the newest manifest, naming a table nobody reads
        **ingested.manifest(resumed.run_id), "run_id": later, "cdc_stopped": ["pg_authid"]}).encode())
    assert ingested.manifest(run().run_id)["previous_run_id"] == resumed.run_id
    assert [line for line in logs if "skipping a corrupt manifest" in line["message"]]


def test_a_manifest_nested_too_deep_or_too_large_is_skipped_and_never_stops_the_cdc_ingest(
        totesys, cdc, ingested, logs):
    """As the polling ingest: the newest manifest a 50 KB `[[[…`, or the previous run's padded past
    manifest.MAX_BYTES (trusted, it would be the previous run): both skipped, the run goes on."""
    first = run()
    nested, large = (lake.run_id_at(lake.run_time(first.run_id) + timedelta(microseconds=n)) for n in (1, 2))
    ingested.put(lake.manifest_key(nested), b"[" * 50_000)
    ingested.put(lake.manifest_key(large), json.dumps({**ingested.manifest(first.run_id), "run_id": large}).encode()
                 .ljust(manifests.MAX_BYTES + 1))
    assert ingested.manifest(run().run_id)["previous_run_id"] == first.run_id
    skipped = [line["message"] for line in logs if "skipping a corrupt manifest" in line["message"]]  # newest first
    assert skipped == [f"skipping a corrupt manifest: manifest _runs/{large}.json is 16,777,217 bytes, more than a "
                       "manifest may be (16,777,216)",
                       f"skipping a corrupt manifest: manifest _runs/{nested}.json is nested too deep to decode"]


def test_a_long_transaction_with_many_savepoints_arrives_whole_once_after_its_commit(totesys, cdc, ingested, source):
    run()
    long = pg8000.native.Connection(**parse_url(source.admin_url))
    long.run("SET synchronous_commit = on")
    long.run("BEGIN")
    for i in range(1, 501):  # 500 subtransactions, every other one rolled back
        long.run(f"SAVEPOINT s{i}")
        long.run("UPDATE sales_order SET units_sold = :n WHERE sales_order_id = :id", n=i, id=i % 3 + 1)
        if i % 2 == 0:
            long.run(f"ROLLBACK TO SAVEPOINT s{i}")
    totesys.run("UPDATE staff SET last_name = 'meanwhile' WHERE staff_id = 3")
    meanwhile = run()  # runs go on while it is open
    assert {t: n for t, n in meanwhile.rows.items() if n} == {"staff": 1}
    long.run("COMMIT")
    long.close()
    committed, quiet = run(), run()
    units = {r["sales_order_id"]: r["units_sold"] for r in rows_of(ingested, committed.run_id, "sales_order")}
    assert units == {"1": "495", "2": "499", "3": "497"}  # the last kept write of each row (i % 3 + 1)
    assert sum(quiet.rows.values()) == 0
    assert len(json.dumps(ingested.manifest(committed.run_id))) < 64 * 1024


def test_status_shows_the_wal_the_slot_retains_or_why_it_cannot(totesys, cdc, ingested):
    run()
    totesys.run("UPDATE design SET file_name = (SELECT string_agg(md5(random()::text), '') "
                "FROM generate_series(1, 30000))")
    shown = cdc_status(Settings.from_env().source, cdc)
    assert shown["slot"] == cdc and shown["wal_status"] == "reserved" and shown["retained_mb"] >= 1
    assert shown["unread_mb"] >= 1 and parse_lsn(shown["oldest_unread_lsn"]) > 0
    run()
    assert cdc_status(Settings.from_env().source, cdc)["unread_mb"] < shown["unread_mb"]
    assert "does not exist" in cdc_status(Settings.from_env().source, "no_such_slot")["error"]


def test_without_full_identity_an_unchanged_value_comes_from_the_run_or_the_run_stops(totesys, cdc, ingested):
    totesys.run("ALTER TABLE design REPLICA IDENTITY DEFAULT")
    big = os.urandom(150_000).hex()
    run()
    totesys.run("UPDATE design SET file_location = :big WHERE design_id = 2", big=big)
    totesys.run("UPDATE design SET design_name = 'same run' WHERE design_id = 2")  # the run holds the value
    result = run()
    row, = rows_of(ingested, result.run_id, "design")
    assert (row["design_name"], row["file_location"]) == ("same run", big)
    totesys.run("UPDATE design SET design_name = 'next run' WHERE design_id = 2")  # nothing holds it now
    with pytest.raises(UnchangedValueMissing, match="design id 2 left file_location .* REPLICA IDENTITY FULL"):
        run()
    before = ingested.keys("_runs/")
    with pytest.raises(UnchangedValueMissing):
        run()  # stopped for good, never a placeholder shipped
    assert ingested.keys("_runs/") == before


def test_a_polled_run_after_cdc_runs_reads_every_row_and_calls_them_not_corrupt(
        totesys, cdc, ingested, source, monkeypatch, logs):
    """cdc -> poll: the CDC runs hold no polling watermark, and the changes since the last polled run
    were shipped from the slot; reading from that run would ship them again as ordinary changes. The
    poll run reads every row instead (`read` `first`), which reconcile tells apart from a reship."""
    from totesys_etl.ingest.run import ingest as poll

    replication = os.environ["TOTESYS_SOURCE_URL"]
    monkeypatch.setenv("TOTESYS_SOURCE_URL", source.reader_url)
    polled = poll(Settings.from_env())
    monkeypatch.setenv("TOTESYS_SOURCE_URL", replication)
    run(), run()  # cdc
    totesys.run("UPDATE address SET city = 'after' WHERE address_id = 1")
    monkeypatch.setenv("TOTESYS_SOURCE_URL", source.reader_url)
    again = poll(Settings.from_env())
    manifest = ingested.manifest(again.run_id)
    assert polled.run_id < again.run_id and manifest["previous_run_id"] is None and manifest["read"] == "first"
    assert manifest.get("source_mode") is None
    assert "after" in {r["city"] for r in rows_of(ingested, again.run_id, "address")}
    assert not [line for line in logs if "corrupt" in line["message"]]
    assert [line for line in logs if "read the replication slot (cdc): this run reads every row" in line["message"]]


def test_a_manifest_dated_far_in_the_future_neither_names_nor_precedes_a_cdc_run(totesys, cdc, ingested, logs):
    """A forged or stray key a year ahead (more than MAX_CLOCK_STEP after the clock), even one holding
    a real CDC run's fields, drags no run id forward and is never the previous run (as in the polling
    ingest); the run reads on from the newest real run."""
    first = run()
    forged = {**ingested.manifest(first.run_id), "run_id": "29991231T235959000000Z", "lsn_to": "FF/0"}
    ingested.put(lake.manifest_key(forged["run_id"]), json.dumps(forged).encode())
    totesys.run("UPDATE staff SET first_name = 'after the forgery' WHERE staff_id = 1")
    second = run()
    assert first.run_id < second.run_id < lake.run_id_at(lake.run_time(first.run_id) + timedelta(hours=1))
    manifest = ingested.manifest(second.run_id)
    assert manifest["previous_run_id"] == first.run_id and manifest["lsn_from"] == ingested.manifest(
        first.run_id)["lsn_to"]
    assert [(r["staff_id"], r["first_name"]) for r in rows_of(ingested, second.run_id, "staff")] == [
        ("1", "after the forgery")]
    assert any("dated after this run" in line["message"] for line in logs if line["level"] == "WARNING")


def test_a_role_without_replication_is_told_what_cdc_needs(totesys, cdc, source, monkeypatch):
    monkeypatch.setenv("TOTESYS_SOURCE_URL", source.reader_url)  # contract §2's SELECT-only role
    with pytest.raises(ConfigurationError, match="needs a LOGIN REPLICATION role"):
        run()


def test_a_first_snapshot_over_the_part_size_is_read_in_parts_under_its_own_snapshot(
        totesys, cdc, ingested, monkeypatch):
    """Issue 38: the snapshot's tables in parts, read by connections importing the run's snapshot.
    A change committed once the snapshot is exported is in no part, and arrives from the slot once."""
    from totesys_etl.ingest import parts

    monkeypatch.setenv(parts.PART_ROWS_VARIABLE, "2")
    export = parts.export_snapshot

    def export_then_write(conn):
        snapshot = export(conn)
        totesys.run("UPDATE staff SET first_name = 'after export' WHERE staff_id = 3")
        return snapshot

    monkeypatch.setattr(parts, "export_snapshot", export_then_write)
    first = run()
    monkeypatch.setattr(parts, "export_snapshot", export)
    manifest = ingested.manifest(first.run_id)
    assert first.rows == {t.name: ROWS_PER_TABLE for t in SOURCE_TABLES}
    staff = manifest["files"]["staff"]
    assert [p["rows"] for p in staff["parts"]] == [2, 1]
    part_rows = [r for p in staff["parts"]
                 for r in csv.DictReader(io.StringIO(ingested.body(p["key"]).decode(), newline=""))]
    assert [r["staff_id"] for r in part_rows] == ["1", "2", "3"]
    assert "after export" not in {r["first_name"] for r in part_rows}
    second = run()
    assert [(r["staff_id"], r["first_name"]) for r in rows_of(ingested, second.run_id, "staff")] == [
        ("3", "after export")]
