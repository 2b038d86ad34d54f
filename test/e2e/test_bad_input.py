"""Bad input in the buckets (issue 17, contract §3 "Nothing lost", §4): quarantined or ignored.

A run's CSVs are damaged (truncated, an extra column, a wrong type) after its manifest was
written; corrupt and hostile manifests and stray objects with keys such as `../x.csv` or quotes
and semicolons are planted in both buckets, and their events delivered. One tick later every
damaged file and manifest is in quarantine with its reason and an ERROR line, nothing is opened
from a hostile key, the ignored objects are untouched, and the warehouse equals a clean run's
minus exactly the versions in quarantine.
"""
import csv
import io
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import quote_plus

import boto3
import pytest

from totesys_etl import lake, quarantine
from totesys_etl import manifest as manifest_module
from totesys_etl.local.drive.notifications import queue_name
from totesys_etl.local.source.simulate import simulate
from totesys_etl.schema import FACTS

pytestmark = pytest.mark.slow

#: table -> (damage, what is held back: the whole file, or only its bad rows; contract §3 "a bad row
#: is held back alone", "a whole file only when it cannot be read at all")
DAMAGED = {
    "sales_order": (lambda body: body[: len(body) * 3 // 5], "file"),             # truncated mid-row
    "payment": (lambda body: b"\n".join(line + b",extra" if line else line       # an extra column
                                        for line in body.split(b"\n")), "file"),
    "purchase_order": (lambda body: _first_field(body, b"lots"), "rows"),         # one row of a wrong type
}
KINDS = {"file": "quarantined_file", "rows": "quarantined_rows"}


def _first_field(body: bytes, value: bytes) -> bytes:
    header, first, rest = body.split(b"\n", 2)
    return b"\n".join([header, value + first[first.index(b","):], rest])


def _versions(body: bytes, held: str) -> set[tuple]:
    """(id, last_updated date, time) of the rows of an original CSV that are held back: every row
    of a file quarantined whole, only the first (the damaged one) when rows are held back."""
    reader = csv.DictReader(io.StringIO(body.decode()))
    out = set()
    for row in reader:
        moment = datetime.fromisoformat(row["last_updated"])
        out.add((int(next(iter(row.values()))), moment.date(), moment.time()))
        if held == "rows":
            break
    return out


def _run_id_after(run_id: str, microseconds: int) -> str:
    moment = datetime.strptime(run_id, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    return lake.run_id_at(moment + timedelta(microseconds=microseconds))


def _event(bucket: str, keys) -> dict:
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(k)}}} for k in keys]}


def test_bad_input_is_quarantined_or_ignored_and_nothing_else_is_lost(seeded, new_pipeline, compare, tally,
                                                                      at_once, json_errors, tmp_path):
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    at_once(faulted.tick, clean.tick)
    simulate(seeded.admin_url, changes=60, seed=71)
    at_once(lambda: faulted.tick(extra={"TOTESYS_CRASH_AT": "ingest.after_manifest"}, expect=137), clean.tick)
    ingested, processed = faulted.ingest_bucket, faulted.processed_bucket
    run_id = lake.run_id_of_manifest(faulted.manifests(ingested)[-1])
    manifest = json.loads(s3.get_object(Bucket=ingested, Key=lake.manifest_key(run_id))["Body"].read())

    quarantined_versions, damaged, held = {}, {}, {}
    for table, (damage, what) in DAMAGED.items():
        key = manifest["files"][table]["key"]
        body = s3.get_object(Bucket=ingested, Key=key)["Body"].read()
        quarantined_versions[table] = _versions(body, what)
        damaged[key], held[key] = damage(body), what
        s3.put_object(Bucket=ingested, Key=key, Body=damaged[key])  # a hostile writer ignores create-only
    bad_runs = [_run_id_after(run_id, n) for n in range(1, 8)]
    hostile_files = {"sales_order": {"key": "../x.csv", "rows": 1},
                     "payment": {"key": "it's\"; DROP TABLE fact_payment; --.csv", "rows": 1},
                     "x'); DROP TABLE dim_staff; --": {"key": lake.table_key("staff", bad_runs[2], "csv"), "rows": 1}}
    manifests = {  # newer than the real run: none may become the run whose cut-off the ingestor trusts
        (ingested, bad_runs[0]): b'{"run_id": "' + bad_runs[0].encode() + b'", "files": {',
        (ingested, bad_runs[1]): json.dumps({"run_id": bad_runs[1]}).encode(),
        (ingested, bad_runs[2]): json.dumps({"run_id": bad_runs[2], "stage": "ingest", "files": hostile_files,
                                             "rows": {}}).encode(),
        (processed, bad_runs[3]): b"\x00not json",
        # 50 KB of `[`: json raises RecursionError, not a ValueError (it stopped every ingest, and failed
        # the run in the processor and the loader on every attempt)
        (ingested, bad_runs[4]): b"[" * 50_000,
        (processed, bad_runs[5]): b'{"run_id": "' + bad_runs[5].encode() + b'", "files": ' + b"{" * 50_000,
        # over the size cap: judged by its size alone (valid, it would be the newest run's watermark)
        (ingested, bad_runs[6]): json.dumps({**manifest, "run_id": bad_runs[6]}).encode()
        .ljust(manifest_module.MAX_BYTES + 1),
    }
    for (bucket, bad_run), body in manifests.items():
        s3.put_object(Bucket=bucket, Key=lake.manifest_key(bad_run), Body=body)
    stray = {ingested: ["../x.csv", "it's; DROP TABLE fact_payment; --.csv", "_runs/not-a-run.json",
                        "_runs/../../x.json", lake.table_key("sales_order", "20260101T000000000000Z", "csv")],
             processed: ["../x.parquet", '"; DROP TABLE dim_date; --.parquet',
                         lake.table_key("fact_sales_order", "20260101T000000000000Z", "parquet")]}
    for bucket, keys in stray.items():
        for key in keys:
            s3.put_object(Bucket=bucket, Key=key, Body=b"sales_order_id\n1\n")
        url = sqs.get_queue_url(QueueName=queue_name(bucket))["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(_event(bucket, keys)))
    tally.fault("bad object planted", len(damaged) + len(manifests) + sum(map(len, stray.values())))

    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = faulted.tick(extra={"TOTESYS_LOG_LEVEL": "ERROR"}, cwd=workdir)
    errors = json_errors(result.stderr)
    assert all(e["level"] == "ERROR" and e["stage"] and e["message"] for e in errors)
    assert {(e["stage"], e["error_kind"], e["key"]) for e in errors} == {
        *{("process", KINDS[held[key]], key) for key in damaged},
        *{("process", "quarantined_manifest", lake.manifest_key(r)) for r in (*bad_runs[:3], bad_runs[4], bad_runs[6])},
        *{("load", "quarantined_manifest", lake.manifest_key(r)) for r in (bad_runs[3], bad_runs[5])}}
    assert len(errors) == 10  # one line each, nothing else at ERROR (the stray objects are ignored)

    def quarantined(key, run):
        return s3.get_object(Bucket=processed, Key=f"quarantine/{run}/{key}")["Body"].read()

    for key, body in damaged.items():
        assert body == s3.get_object(Bucket=ingested, Key=key)["Body"].read()  # the original stays
        if held[key] == "file":
            assert quarantined(key, run_id) == body
        else:  # the bad row alone, as its original text, with its row number and a reason
            rows = list(csv.DictReader(io.StringIO(quarantined(key + ".rows.csv", run_id).decode())))
            assert len(rows) == 1 and next(iter(rows[0].values())) == "lots" and rows[0]["etl_reason"], rows
            key += ".rows.csv"
        reason = json.loads(quarantined(key + ".reason.json", run_id))
        assert reason["error_kind"] == KINDS[held[key.removesuffix(".rows.csv")]] and reason["reason"]
    for (bucket, bad_run), body in manifests.items():
        origin = quarantine.INGESTED if bucket == ingested else quarantine.PROCESSED
        assert quarantined(f"{origin}/{lake.manifest_key(bad_run)}", bad_run) == body
    processed_manifest = json.loads(s3.get_object(Bucket=processed, Key=lake.manifest_key(run_id))["Body"].read())
    assert {q["key"] for q in processed_manifest["quarantined"]} == set(damaged)
    for bucket, keys in stray.items():
        for key in keys:  # ignored: untouched, and never copied anywhere
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"sales_order_id\n1\n"
    quarantine_keys = faulted.keys(processed, "quarantine/")
    assert not [k for k in quarantine_keys if any(k.endswith(s) for keys in stray.values() for s in keys)]
    assert not any(".." in k or ";" in k for k in quarantine_keys)
    assert list(tmp_path.rglob("*")) == [workdir]  # no key ever became a path on disk

    simulate(seeded.admin_url, changes=30, seed=72)  # the stage goes on: the next run loads as usual
    at_once(faulted.tick, clean.tick)
    expected = clean.rows()
    for fact in FACTS:
        versions = quarantined_versions.get(fact.source, set())
        names = [c.name for c in fact.data_columns]
        at = [names.index(c) for c in fact.version_key]
        kept = {row: n for row, n in expected[fact.name].items() if tuple(row[i] for i in at) not in versions}
        removed = sum(expected[fact.name].values()) - sum(kept.values())
        assert removed == len(versions)  # every quarantined version is one the clean run holds, once
        tally.rows_quarantined += removed
        expected[fact.name] = type(expected[fact.name])(kept)
    assert all(quarantined_versions.values())
    whole = {key for key in damaged if held[key] == "file"}  # unreadable: their versions are all held back
    compare("bad input quarantined or ignored", faulted, clean, clean_rows=expected, skip_keys=whole,
            held_back={f"fact_{table}": versions for table, versions in quarantined_versions.items()})


def _purge(bucket: str) -> None:
    sqs = boto3.client("sqs")
    sqs.purge_queue(QueueUrl=sqs.get_queue_url(QueueName=queue_name(bucket))["QueueUrl"])


def test_a_corrupt_manifest_dated_in_the_future_hides_no_later_run(seeded, new_pipeline, compare, tally, at_once,
                                                                   marks_move, open_gates):
    """A corrupt `_runs/20990101T…json` is quarantined; the sweeps' marks must not jump to it, or a
    run that appears later below it, its event lost, would never be swept (contract §4: a lost event
    delays data, never loses it)."""
    faulted, clean = new_pipeline("f"), new_pipeline("c")
    at_once(faulted.tick, clean.tick)
    future = "20990101T000000000000Z"
    boto3.client("s3").put_object(Bucket=faulted.ingest_bucket, Key=lake.manifest_key(future), Body=b"{garbage")
    faulted.tick()
    assert future in [lake.run_id_of_manifest(k) for k in faulted.manifests(faulted.processed_bucket)]
    simulate(seeded.admin_url, changes=40, seed=81)
    at_once(lambda: faulted.tick(extra={"TOTESYS_CRASH_AT": "ingest.after_manifest"}, expect=137), clean.tick)
    orphan = lake.run_id_of_manifest(faulted.manifests(faulted.ingest_bucket)[-2])
    _purge(faulted.ingest_bucket)  # its ObjectCreated event is lost
    tally.fault("corrupt manifest dated in the future, then a lost event")
    sweep = faulted.start_handler("process", {})  # a scheduled processor sweep, as in AWS
    open_gates(sweep)
    _, stderr = sweep.communicate(timeout=120)  # reads both pipes: a full pipe cannot stall the handler
    assert sweep.returncode == 0, stderr
    assert lake.manifest_exists(faulted.processed_bucket, orphan)  # the processor's sweep found it
    _purge(faulted.processed_bucket)  # and the processed manifest's event is lost too
    faulted.tick()  # only the loader's sweep can find it now: its mark must not have jumped to 2099
    compare("corrupt manifest dated in the future, event lost", faulted, clean)
    marks = marks_move("marks below a corrupt manifest dated in the future", faulted)
    assert all(mark < future for mark in marks)


def test_a_nul_in_one_text_value_holds_back_its_row_alone(seeded, new_pipeline, tally, json_errors, run_sql):
    """PostgreSQL's text cannot hold NUL. An ingested CSV tampered with one in one row's `item_code`:
    the processor holds that row back, with its reason, and the other rows of the file load in the
    same run (the loader's COPY would refuse the whole file); the row's next version loads normally."""
    s3 = boto3.client("s3")
    pipeline = new_pipeline("n")
    pipeline.tick()
    changed = run_sql(seeded.admin_url, "UPDATE purchase_order SET item_code = 'NUL-TEST-' || purchase_order_id, "
                                        "last_updated = now() WHERE purchase_order_id IN (1, 2, 3) "
                                        "RETURNING purchase_order_id")
    assert sorted(changed) == [[1], [2], [3]]
    pipeline.tick(extra={"TOTESYS_CRASH_AT": "ingest.after_manifest"}, expect=137)
    run_id = lake.run_id_of_manifest(pipeline.manifests(pipeline.ingest_bucket)[-1])
    manifest = json.loads(s3.get_object(Bucket=pipeline.ingest_bucket, Key=lake.manifest_key(run_id))["Body"].read())
    key = manifest["files"]["purchase_order"]["key"]
    body = s3.get_object(Bucket=pipeline.ingest_bucket, Key=key)["Body"].read()
    assert body.count(b"NUL-TEST-2") == 1 and manifest["files"]["purchase_order"]["rows"] == 3
    s3.put_object(Bucket=pipeline.ingest_bucket, Key=key, Body=body.replace(b"NUL-TEST-2", b"NUL-TEST\x00-2"))
    tally.fault("NUL planted in one text value")

    result = pipeline.tick(extra={"TOTESYS_LOG_LEVEL": "ERROR"})
    errors = json_errors(result.stderr)
    assert [(e["stage"], e["error_kind"], e["key"]) for e in errors] == [("process", "quarantined_rows", key)], errors
    latest = ("SELECT DISTINCT ON (purchase_order_id) purchase_order_id, item_code FROM fact_purchase_order "
              "WHERE purchase_order_id IN (1, 2, 3) "
              "ORDER BY purchase_order_id, last_updated_date DESC, last_updated_time DESC")
    loaded = dict(map(tuple, run_sql(pipeline.warehouse_url, latest)))
    assert loaded[1] == "NUL-TEST-1" and loaded[3] == "NUL-TEST-3"   # the rest of the file, in that run
    assert loaded[2] != "NUL-TEST-2"                                 # the held-back row's version is not in
    held = s3.get_object(Bucket=pipeline.processed_bucket, Key=f"quarantine/{run_id}/{key}.rows.csv")["Body"].read()
    [row] = list(csv.DictReader(io.StringIO(held.decode())))
    assert (row["purchase_order_id"], row["item_code"]) == ("2", "NUL-TEST\x00-2")
    assert row["etl_reason"] == "item_code holds a NUL character"
    listing = pipeline.command("quarantine")
    assert listing.returncode == 0 and "item_code holds a NUL character" in listing.stdout, listing.stdout

    run_sql(seeded.admin_url, "UPDATE purchase_order SET last_updated = now() WHERE purchase_order_id = 2")
    pipeline.tick()  # the source was never wrong: its next version of the row loads normally
    assert dict(map(tuple, run_sql(pipeline.warehouse_url, latest)))[2] == "NUL-TEST-2"
