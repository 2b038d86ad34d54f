"""The pieces `wraparound.explain_wraparound` proves a re-read after a wraparound with (ADR 0001's bound):
which reshipped versions look like one in the lake, the ingest's 64-bit id of a raw `xmin`, and which
ids a run read, rebuilt from the manifests (the rule itself, `extract.ReadCondition`, and its agreement
with the ingest's SQL are test/ingest/test_extract.py's). The whole, through a real wraparound, is
test/ingest/years/test_wraparound_reconcile.py."""
from __future__ import annotations

from datetime import datetime

from totesys_etl.history import _alike
from totesys_etl.ingest.xids import xid8_of_raw
from totesys_etl.ingest.extract import xid8_of_xmin

EPOCH = 1 << 32
S1, S2 = datetime(2024, 1, 8, 1, 9), datetime(2024, 1, 9, 7, 0)
ROW = ("1", "Leeds")


def test_copies_of_one_row_with_no_other_version_between_look_like_a_reread():
    copies = {(1, S1): [("r1", ROW), ("r3", ROW)],
              (2, S1): [("r1", ROW), ("r3", ROW)],                 # id 2 changed between them (r2): stale again
              (3, S1): [("r1", ROW), ("r2", ("3", "York")), ("r3", ROW)],   # another row between: a reship
              (4, S1): [("r2", ROW), ("r3", ROW)]}                 # id 4 changed before both: still alike
    carried_by = {"r1": {(1, S1), (2, S1), (3, S1), (4, S2)}, "r2": {(2, S2), (3, S1), (4, S1)},
                  "r3": {(1, S1), (2, S1), (3, S1), (4, S1)}}
    assert _alike(copies, carried_by) == {(1, S1): (ROW, ["r1", "r3"]), (4, S1): (ROW, ["r2", "r3"])}
    # r2 read the table whole on purpose (a restore): its copy needs no wraparound, the others still do
    restored = {(5, S1): [("r1", ROW), ("r2", ROW), ("r3", ROW)]}
    carried_by = {"r1": {(5, S1)}, "r2": {(5, S1)}, "r3": {(5, S1)}}
    assert _alike(restored, carried_by, whole={"r2"}) == {(5, S1): (ROW, ["r1", "r3"])}
    assert _alike(restored, carried_by) == {(5, S1): (ROW, ["r1", "r2", "r3"])}


def test_the_64_bit_id_of_a_raw_xmin_is_the_ingests(warehouse_url, run_sql):
    """The ingest makes a row's `xmin` 64-bit in SQL; reconcile, for rows it has already read, in
    Python: both must give the same id, or a re-read is proved against the wrong id."""
    cases = [(500, 1000), (2000, 1000), (500, EPOCH + 1000), (1000, EPOCH + 1000), (2000, EPOCH + 1000),
             (EPOCH - 1, 5 * EPOCH + 3), (3, 5 * EPOCH + 3), (4, 5 * EPOCH + 3), (123456, 7 * EPOCH - 1)]
    sql = " UNION ALL ".join(f"SELECT {xid8_of_xmin(xmax)} FROM (SELECT CAST('{raw}' AS xid) AS xmin) AS t"
                             for raw, xmax in cases)  # nosec B608 - integers
    assert run_sql(warehouse_url, sql) == [[xid8_of_raw(raw, xmax)] for raw, xmax in cases]


def _manifest(run_id, snapshot, read, previous=None, in_progress="{}", seen="{}", unread=(), stopped=None):
    """An ingest manifest as the ingest writes its watermark (run.py), trimmed to what a reader needs."""
    document = {"run_id": run_id, "stage": "ingest", "previous_run_id": previous, "snapshot": snapshot,
                "cutoff": "2024-01-09 12:00:00.000000", "read": read, "seen": seen, "in_progress": in_progress,
                "unread": list(unread), "rescanned_at": None, "files": {}, "rows": {}}
    if stopped:
        document["stopped"] = stopped
    return document


def test_what_a_run_read_comes_from_its_manifest_and_its_previous_runs(buckets):
    """First, recent and rescan runs, a table resuming from where it stopped, and a run whose previous
    manifest is corrupt (nothing it shipped is explained)."""
    from totesys_etl import lake
    from totesys_etl.adapters import s3
    from totesys_etl.wraparound import _RunReads

    bucket = buckets[0]
    e = EPOCH
    claim = {"xids": f"{{[{e + 200},{e + 300})}}", "stamped_up_to": "2024-01-08 22:00:00.000000"}
    since = {"run_id": "20240109T110000000000Z", "snapshot": f"{e + 50}:{e + 60}:", "seen": f"{{[{e + 51},{e + 60})}}",
             "cutoff": "2024-01-09 11:00:00.000000", "in_progress": "{}", "unread": [], "rescanned_at": None}
    documents = [
        _manifest("20240109T120000000000Z", f"{e + 100}:{e + 200}:", "first", in_progress=f"{{[{e + 150},{e + 160})}}",
                  seen=f"{{[{e + 101},{e + 150}),[{e + 160},{e + 200})}}"),
        _manifest("20240109T120500000000Z", f"{e + 300}:{e + 300}:", "recent", "20240109T120000000000Z",
                  seen=f"{{[{e + 101},{e + 300})}}", unread=[claim],   # left for the next scan by id
                  stopped={"staff": {"missing": ["email_address"], "since": since}}),
        _manifest("20240109T121000000000Z", f"{e + 400}:{e + 400}:", "rescan", "20240109T120500000000Z"),
        _manifest("20240109T121500000000Z", f"{e + 500}:{e + 500}:", "full", "20240109T121200000000Z"),
    ]
    for document in documents:
        s3.put_create_only(bucket, lake.manifest_key(document["run_id"]), s3.json_body(document))
    s3.put_create_only(bucket, lake.manifest_key("20240109T121200000000Z"), b"{not json")
    runs = _RunReads(bucket)
    first = runs.read("20240109T120000000000Z", "address")
    assert first.xmax == e + 200 and first.has(7, S1) and first.has(e + 199, S1) and not first.has(e + 155, S1)
    recent = runs.read("20240109T120500000000Z", "address")   # previous cut-off 12:00, window from 22:00 the day before
    assert recent.has(e + 250, S2) and not recent.has(e + 250, S1) and not recent.has(e + 120, S2)
    rescan = runs.read("20240109T121000000000Z", "address")
    assert rescan.has(e + 350, S1) and rescan.has(e + 250, S1) and not rescan.has(e + 250, S2)
    assert rescan.has(e + 300, S2) and not rescan.has(e + 150, S1)
    resumed = runs.read("20240109T121000000000Z", "staff")     # stopped at the previous run: read from `since`
    assert resumed.has(e + 50, S1) and resumed.has(e + 150, S2) and not resumed.has(e + 55, S1)
    assert runs.read("20240109T121500000000Z", "address") is None


def test_a_copy_is_a_reread_only_if_the_run_read_that_id(source, buckets, run_sql):
    """The same row, its raw xmin 2^32 ids on at the second copy: a re-read only if the second run read
    that id; the same copy from a run that counted it as in progress is a version shipped twice."""
    import pg8000.native

    from totesys_etl import lake
    from totesys_etl.adapters import s3
    from totesys_etl.adapters.postgres import parse_url
    from totesys_etl.history import Shipped
    from totesys_etl.wraparound import _source_rows, explain_wraparound
    from totesys_etl.schema import source_table
    from totesys_etl.schema.ddl import create_table

    table = source_table("currency")
    run_sql(source.admin_url, create_table(table))
    run_sql(source.admin_url, "INSERT INTO currency VALUES (1, 'GBP', '2024-01-08 01:09:00', '2024-01-08 01:09:00')")
    raw = int(run_sql(source.admin_url, "SELECT xmin::text FROM currency")[0][0])
    e, bucket = EPOCH, buckets[0]
    first = _manifest("20240109T120000000000Z", f"{e + raw - 20}:{e + raw - 10}:", "first",
                      seen=f"{{[{e + raw - 19},{e + raw - 10})}}")   # raw maps to epoch 0 here, to epoch 1 after
    s3.put_create_only(bucket, lake.manifest_key(first["run_id"]), s3.json_body(first))
    for run_id, in_progress in (("20240109T120500000000Z", "{}"),
                                ("20240109T121000000000Z", f"{{[{e + raw},{e + raw + 1})}}")):
        second = _manifest(run_id, f"{e + raw + 10}:{e + raw + 10}:", "full", first["run_id"], in_progress=in_progress,
                           seen="{}")
        s3.put_create_only(bucket, lake.manifest_key(run_id), s3.json_body(second))
    reader = pg8000.native.Connection(**parse_url(source.reader_url))
    try:
        row = _source_rows(reader, table, [1])[1][1]
        found = {}
        for run_id in ("20240109T120500000000Z", "20240109T121000000000Z"):
            runs = [first["run_id"], run_id]
            version = (1, datetime(2024, 1, 8, 1, 9))
            found[run_id] = Shipped(reshipped=[(version, runs)], alike={version: (row, runs)})
            explain_wraparound(reader, bucket, {"currency": found[run_id]})
        changed = Shipped(reshipped=[(version, runs)], alike={version: ((row[0], "EUR", *row[2:]), runs)})
        explain_wraparound(reader, bucket, {"currency": changed})
    finally:
        reader.close()
    read, running = found["20240109T120500000000Z"], found["20240109T121000000000Z"]
    assert read.wrapped == [(version, [first["run_id"], "20240109T120500000000Z"])] and not read.reshipped
    assert running.reshipped == [(version, [first["run_id"], "20240109T121000000000Z"])] and not running.wrapped
    assert changed.reshipped and not changed.wrapped   # the copies' row is not the source's now
