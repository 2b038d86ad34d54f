"""`reconcile` for courier files (contract §9): `fact_delivery` against what landed, every valid event once.

What landed is read back from the lake, not from the landing bucket's JSON: each courier run's
`delivery_event` CSV holds exactly the valid events of its file (the ingest checked them against
`schema/courier.py` and held the bad ones back), and only runs with a manifest count (a crashed
run's CSV is named by nothing). The CSVs are streamed into a temporary table of the warehouse
session, so the comparison is SQL however many events there are:
- every event id that landed is stored (`missing`), none is stored that never landed (`extra`);
- each stored row equals one landed copy of its event (`different`: a re-sent event may carry other
  values, and the first loaded wins, so any landed copy will do);
- no event id is stored twice, and every `event_date` is in `dim_date`;
- every object in the landing bucket has been taken (a file not taken yet is `missing`: its events
  have not arrived).
Events whose sales order is not (yet) in `fact_sales_order` are counted (a note) but are
not a difference: only the courier knows that order, and it still loads.
"""
from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Iterator

from pg8000.native import identifier

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import Connection, copy_in
from totesys_etl.config import Settings
from totesys_etl.landing_marks import MARK_PREFIX, Landed, is_taken
from totesys_etl.schema.courier import DELIVERY_EVENT, FACT_DELIVERY
from totesys_etl.schema.ddl import column_definitions

LANDED = "etl_tmp_landed_events"
_CHUNK = 1 << 20


def _without_header(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.readline()  # the header: column names only, never a quoted newline
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            yield chunk


def _landed_csvs(ingest_bucket: str) -> list[str]:
    """The `delivery_event` CSVs of runs that have a manifest."""
    runs = set(lake.runs_after(ingest_bucket, None))
    prefix = f"{DELIVERY_EVENT.name}/"
    keys = []
    for key in s3.list_keys(ingest_bucket, prefix):
        run_id = key.rsplit("_", 1)[-1].removesuffix(".csv")
        if run_id in runs and key == lake.table_key(DELIVERY_EVENT.name, run_id, "csv"):
            keys.append(key)
    return keys


def _stage_landed(warehouse: Connection, ingest_bucket: str) -> int:
    """Every landed valid event into a temporary table of this session; the rows copied."""
    warehouse.run(f"CREATE TEMP TABLE {identifier(LANDED)} "
                  f"({', '.join(column_definitions(DELIVERY_EVENT.columns))})")
    rows = 0
    for key in _landed_csvs(ingest_bucket):
        fd, path = tempfile.mkstemp(suffix=".csv")
        os.close(fd)
        try:
            s3.download(ingest_bucket, key, path)
            rows += copy_in(warehouse, LANDED, DELIVERY_EVENT.column_names, _without_header(path))
        finally:
            Path(path).unlink(missing_ok=True)  # s3.download removes what it wrote when it fails midway
    return rows


def pending_files(settings: Settings) -> list[str]:
    """Keys in the landing bucket not taken yet (a HEAD per object: a check, not a pipeline step)."""
    return [o["key"] for o in s3.list_objects(settings.landing_bucket)
            if not is_taken(settings, Landed(o["key"], o["etag"]))]


def check(warehouse: Connection, settings: Settings, table_check):
    """A `reconcile.TableCheck` for `fact_delivery` (`table_check` is that class: no import cycle)."""
    _stage_landed(warehouse, settings.ingest_bucket)
    landed, fact = identifier(LANDED), identifier(FACT_DELIVERY.name)
    same = ("f.sales_order_id = l.sales_order_id AND f.status = l.status AND f.event_date = l.at::date "
            "AND f.event_time = l.at::time AND f.city = l.city AND f.courier = l.courier")
    result = table_check(FACT_DELIVERY.name)
    result.source_rows = warehouse.run(f"SELECT count(DISTINCT event_id) FROM {landed}")[0][0]  # nosec B608
    result.warehouse_rows = warehouse.run(f"SELECT count(*) FROM {fact}")[0][0]  # nosec B608
    result.missing = [r[0] for r in warehouse.run(
        f"SELECT DISTINCT l.event_id FROM {landed} l WHERE NOT EXISTS "  # nosec B608
        f"(SELECT 1 FROM {fact} f WHERE f.event_id = l.event_id)")]
    result.missing += [f"file not taken yet: {key}" for key in pending_files(settings)]
    result.extra = [r[0] for r in warehouse.run(
        f"SELECT f.event_id FROM {fact} f WHERE NOT EXISTS "  # nosec B608
        f"(SELECT 1 FROM {landed} l WHERE l.event_id = f.event_id)")]
    result.different = [r[0] for r in warehouse.run(
        f"SELECT f.event_id FROM {fact} f WHERE EXISTS (SELECT 1 FROM {landed} l "  # nosec B608
        f"WHERE l.event_id = f.event_id) AND NOT EXISTS "
        f"(SELECT 1 FROM {landed} l WHERE l.event_id = f.event_id AND {same})")]
    result.duplicate_versions = warehouse.run(
        f"SELECT count(*) - count(DISTINCT event_id) FROM {fact}")[0][0]  # nosec B608
    result.unresolved = {"event_date": warehouse.run(
        f"SELECT count(*) FROM {fact} f WHERE NOT EXISTS "  # nosec B608
        "(SELECT 1 FROM dim_date d WHERE d.date_id = f.event_date)")[0][0]}
    unknown = warehouse.run(
        f"SELECT count(DISTINCT f.sales_order_id) FROM {fact} f WHERE NOT EXISTS "  # nosec B608
        "(SELECT 1 FROM fact_sales_order s WHERE s.sales_order_id = f.sales_order_id)")[0][0]
    if unknown:
        result.notes.append(f"{unknown} sales order(s) named by events are not in fact_sales_order (loaded anyway)")
    warehouse.run(f"DROP TABLE {landed}")
    return result


def landing_counts(settings: Settings) -> dict:
    """For `status`: the landing bucket's files at or after the sweep's mark (older ones are all taken),
    how many are taken and how many wait. A HEAD per recent file, none for older ones."""
    mark = lake.read_mark(settings.ingest_bucket, MARK_PREFIX)
    recent = [Landed(o["key"], o["etag"]) for o in s3.list_objects(settings.landing_bucket)
              if mark is None or lake.run_id_at(o["last_modified"]) >= mark]
    pending = sum(not is_taken(settings, obj) for obj in recent)
    return {"since": mark, "pending": pending, "taken": len(recent) - pending}
