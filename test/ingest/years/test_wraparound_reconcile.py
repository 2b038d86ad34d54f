"""`reconcile` after a wraparound (issue 34, item 2's consequence; ADR 0001 "Frozen rows older than 2^32
ids"): a frozen row whose raw `xmin` comes round again as an id handed out since the previous run is read
once more, by the bound the README states. Through the real stages, that re-read is stored once (no
fact-history row added, no dimension row rewritten), and `reconcile` names it on a line of its own and
passes; a genuine double shipment (a run's file copied under another run) still fails it.

The source is a cluster of the test's own: seeded, frozen with VACUUM FREEZE, moved by pg_resetwal to
just before the seeded rows' raw ids come round in the next epoch, then ticked across them.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.cli import main
from totesys_etl.config import Settings
from totesys_etl.ingest.run import ingest
from totesys_etl.load.handler import lambda_handler as load_handler
from totesys_etl.local.source.seed import seed
from totesys_etl.process.run import process_run
from totesys_etl.schema import DIMENSIONS, FACTS, SOURCE_TABLES

pytestmark = pytest.mark.slow
EPOCH = 1 << 32


def _tick() -> str:
    """One ingest, then the real processor and loader over it: the run's id."""
    settings = Settings.from_env()
    run_id = ingest(settings).run_id
    process_run(settings, run_id)
    load_handler({}, None)
    return run_id


def _star(warehouse_url: str) -> dict[str, set]:
    """Every dimension and fact row, each with its own xmin: a row rewritten, even to the same values, shows."""
    conn = pg8000.native.Connection(**parse_url(warehouse_url))
    try:
        return {t.name: {tuple(r) for r in conn.run(f"SELECT xmin::text, t::text FROM {t.name} t")}  # nosec B608
                for t in (*DIMENSIONS, *FACTS)}
    finally:
        conn.close()


def _reconcile(capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["reconcile"])
    return code, capsys.readouterr().out


def _copy_run(bucket: str, template: str, file_of: str, table: str) -> str:
    """A run that never read the source: `template`'s manifest under a new id, carrying a copy of the
    CSV `file_of` shipped for `table` (a double shipment, as a buggy or replayed writer would make)."""
    run_id = lake.run_id_at(lake.run_time(template) + timedelta(milliseconds=1))
    manifest = manifests.read(bucket, template)
    source = manifests.read(bucket, file_of)["files"][table]
    key = lake.table_key(table, run_id, "csv")
    assert s3.copy_create_only(bucket, source["key"], bucket, key)
    manifest.update(run_id=run_id, previous_run_id=template, files={table: {**source, "key": key}},
                    rows={table: source["rows"]})
    assert s3.put_create_only(bucket, lake.manifest_key(run_id), json.dumps(manifest).encode())
    return run_id


def test_a_frozen_rows_reread_after_a_wraparound_is_stored_once_and_reconciles_and_a_real_copy_fails(
        own_source, warehouse_url, monkeypatch, capsys):
    monkeypatch.setenv("TOTESYS_WAREHOUSE_URL", warehouse_url)
    seed(own_source.admin_url, orders=12, seed=5)
    union = " UNION ALL ".join(f"SELECT xmin::text::bigint AS x FROM {t.name}" for t in SOURCE_TABLES)
    low, high = own_source.run(f"SELECT min(x), max(x) FROM ({union}) AS a")[0]  # nosec B608 - declared names
    own_source.freeze_everything()
    own_source.set_next_xid(1, low - 50)   # epoch 1: the seeded rows (epoch 0) are 2^32 ids old, less 50
    first = _tick()                        # reads every row (their raw ids map to epoch 0: right)
    before = _star(warehouse_url)
    own_source.consume_until(EPOCH + high + 1)  # the seeded rows' raw ids are handed out again, and commit
    own_source.run("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = LOCALTIMESTAMP "
                   "WHERE sales_order_id = 2")  # a real change alongside
    recent = _tick()                       # reads the re-read rows stamped in its window, claims the rest
    monkeypatch.setenv("TOTESYS_FULL_RESCAN_SECONDS", "0")
    rescan = _tick()                       # reads the claim: every other frozen row once more
    shipped = {r: manifests.read(Settings.from_env().ingest_bucket, r)["rows"] for r in (first, recent, rescan)}
    # every row again but the old version of the order updated meanwhile, and that order's new version
    assert sum(shipped[recent].values()) + sum(shipped[rescan].values()) == sum(shipped[first].values())

    after = _star(warehouse_url)
    changed = {t: (before[t] - after[t], after[t] - before[t]) for t in before if before[t] != after[t]}
    assert list(changed) == ["fact_sales_order"]            # the re-read rewrote no dimension row
    gone, added = changed["fact_sales_order"]
    assert not gone and len(added) == 1                     # one row: the real change, not the re-reads

    code, out = _reconcile(capsys)
    assert "shipped by more than one run" not in out, out
    for table, rows in shipped[first].items():   # every row re-read but the order updated meanwhile
        assert f"{table}: re-read after a wraparound: {rows - (table == 'sales_order')} rows, the bound in ADR 0001" \
            in out, out
    assert "reconcile: warehouse equals source" in out, out
    assert code == 0

    bucket = Settings.from_env().ingest_bucket
    copied = _copy_run(bucket, rescan, file_of=first, table="address")  # address again, by a run that read nothing
    process_run(Settings.from_env(), copied)
    load_handler({}, None)
    assert _star(warehouse_url) == after                    # the warehouse cannot show the copy; the lake does
    # A re-read row changed since cannot be proved a re-read (the lake does not keep xmin, the source no
    # longer holds that row's): it stays a version shipped twice, as the README's limitations say.
    own_source.run("UPDATE staff SET first_name = 'Changed', last_updated = LOCALTIMESTAMP WHERE staff_id = 1")
    _tick()
    code, out = _reconcile(capsys)
    assert f"address: {shipped[first]['address']} versions shipped by more than one run (the same row)" in out, out
    assert f"staff: re-read after a wraparound: {shipped[first]['staff'] - 1} rows" in out, out
    assert "staff: 1 versions shipped by more than one run (the same row), e.g. 1 @ " in out, out
    assert f"payment: re-read after a wraparound: {shipped[first]['payment']} rows" in out, out
    assert "DIFFERENCES FOUND" in out, out
    assert code == 1
