"""`totesys-etl status`: where the pipeline is, read from the lake and the warehouse alone.

Works against any deployment the settings point at (the local one or AWS's buckets and
warehouse): per stage the newest run, its low-water mark and the runs still pending; what is
held back, by kind, in rows (or whole files); and in the warehouse the newest loaded run, every
table's row count and the lag from that run's snapshot to now; each stage's and the FX source's
last failure with its one-line reason (`failures.py`); the source's columns as the newest
totesys run found them (tables stopped for a missing column, columns added and ignored). Listings
start at the loader's mark (or a day back before the first load), so the cost does not grow with
the lake.

A service that cannot be reached (the warehouse, the S3 API) is named with its one-line reason
under `unreachable`, and the rest is shown all the same: status is what one reads when something
is down, so it never fails for that (contract §6: exit 0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from botocore.exceptions import BotoCoreError, ClientError
from pg8000.native import identifier

from totesys_etl import failures, lake, landed, quarantine
from totesys_etl import manifest as manifests
from totesys_etl.adapters.postgres import Connection, DatabaseError, InterfaceError, connect, sqlstate
from totesys_etl.config import Settings
from totesys_etl.errors import EtlError, InvalidInput, LakeUnavailable, describe
from totesys_etl.load.ledger import load_mark, loaded_runs
from totesys_etl.ingest.cdc.settings import CdcSettings, source_mode
from totesys_etl.ingest.cdc.slot import cdc_status
from totesys_etl.ingest.watermark import newest_runs_first
from totesys_etl.process.run import MARK_PREFIX as PROCESS_MARK_PREFIX
from totesys_etl.schema import API_FACTS, EVENT_FACTS, FACT_EXCHANGE_RATE, STAR_TABLES

#: Without a loader mark yet, the listings start this far back.
FIRST_LOOK = timedelta(days=1)
#: Every warehouse table whose rows status counts: the star schema and each further source's facts.
COUNTED_TABLES = (*STAR_TABLES, *API_FACTS, *EVENT_FACTS)
#: The failures kept per source beside the stages' (contract §6 "per source ... last failure").
FX_FAILURES = "fx"


@dataclass
class StageStatus:
    newest_run: str | None = None
    mark: str | None = None
    pending: list[str] = field(default_factory=list)
    last_failure: dict | None = None   # {"at", "error_kind", "reason"} (failures.record)
    mark_note: str | None = None  # why there is no mark yet, so a `-` is never a riddle (not for ingest)


@dataclass
class Status:
    ingest: StageStatus
    process: StageStatus
    load: StageStatus
    #: per kind: {"entries": reason files, "rows": rows held back in them (None: whole files only)}
    quarantined: dict[str, dict]
    warehouse_rows: dict[str, int]
    loaded_at: str | None
    lag_seconds: float | None
    newest_fx_date: str | None = None  # the newest day in fact_exchange_rate (contract §9 FX rates)
    landing: dict | None = None  # courier files (contract §9): {"since", "pending", "taken"}, or None when off
    cdc_slot: dict | None = None  # cdc mode (contract §10): the slot's retained WAL, or why it could not be read
    fx_failure: dict | None = None  # the FX source's last failure (it never fails a run, so no stage shows it)
    #: contract §2 "Schema changes", from the newest totesys run: {"run_id", "stopped", "new_columns"},
    #: each {table: [columns]}; None before the first run (or with the S3 API down)
    source_columns: dict | None = None
    #: what could not be reached ("warehouse", "S3 API") -> the one-line reason; the rest is shown anyway
    unreachable: dict[str, str] = field(default_factory=dict)
    settle_seconds: float = lake.SETTLE.total_seconds()

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{name} unreachable: {reason}" for name, reason in self.unreachable.items()]
        lines.append(f"{'stage':<8}{'newest run':<25}{'low-water mark':<25}pending")
        # A `-` mark gets a star and its reason below the rows, so the columns stay aligned. Where the
        # S3 API is down the runs are unknown, and so is why a mark is unset.
        lake_down = "S3 API" in self.unreachable
        notes = {name: getattr(self, name).mark_note for name in ("process", "load")
                 if not getattr(self, name).mark and getattr(self, name).mark_note and not lake_down
                 and not (name == "load" and "warehouse" in self.unreachable)}
        reasons = sorted(set(notes.values()))
        for name in ("ingest", "process", "load"):
            stage: StageStatus = getattr(self, name)
            if (name == "load" and "warehouse" in self.unreachable) or (name != "load" and lake_down):
                lines.append(f"{name:<8}? (the {'warehouse' if name == 'load' else 'S3 API'} is unreachable)")
                continue
            pending = "?" if lake_down else f"{len(stage.pending)}" + (f" (oldest {stage.pending[0]})"
                                                                       if stage.pending else "")
            mark = stage.mark or ("-" + "*" * (1 + reasons.index(notes[name])) if name in notes else "-")
            lines.append(f"{name:<8}{stage.newest_run or '-':<25}{mark:<25}{pending}")
            if stage.last_failure:
                lines.append(f"        last failure {_failure(stage.last_failure)}")
        lines += [f"{'-' + '*' * n}: no low-water mark yet: {reason}" for n, reason in enumerate(reasons, 1)]
        held = ", ".join(f"{kind} {_held(n)}" for kind, n in sorted(self.quarantined.items())) or \
            ("? (the S3 API is unreachable)" if lake_down else "nothing")
        lines.append(f"held back: {held} (totesys-etl quarantine lists them)")
        if self.landing is not None:
            lines.append(f"landing: {self.landing['pending']} courier file(s) waiting, {self.landing['taken']} taken "
                         f"(since {self.landing['since'] or 'the first'})")
        if self.source_columns is not None:
            lines.append(f"source columns: {_columns_line(self.source_columns)}")
        fx_date = self.newest_fx_date or ("?" if "warehouse" in self.unreachable else "-")
        lines.append(f"FX rates: newest date {fx_date}"
                     + (f"; last failure {_failure(self.fx_failure)}" if self.fx_failure else ""))
        if "warehouse" in self.unreachable:
            lines.append("warehouse: unreachable (its rows, newest loaded run and lag are unknown)")
            return "\n".join(lines)
        lag = f"{self.lag_seconds:,.0f} s" if self.lag_seconds is not None else "-"
        lines.append(f"warehouse: newest run loaded at {self.loaded_at or '-'}, lag {lag}")
        lines += [f"  {table:<22}{rows:>12,}" for table, rows in self.warehouse_rows.items()]
        if self.cdc_slot is not None:
            slot = self.cdc_slot
            state = slot["error"] if "error" in slot else (
                f"retains {slot['retained_mb']:,} MB of WAL ({slot['wal_status']}), "
                f"{slot['unread_mb']:,} MB written since its position {slot['oldest_unread_lsn']}")
            lines.append(f"replication slot {slot['slot']}: {state}")
        return "\n".join(lines)


def _columns_line(columns: dict) -> str:
    stopped = [f"{t} stopped, lacking {', '.join(c)} (source_schema_changed)" for t, c in columns["stopped"].items()]
    added = [f"{t}.{c}" for t, cs in columns["new_columns"].items() for c in cs]
    said = stopped + ([f"new, ignored: {', '.join(added)}"] if added else [])
    return "; ".join(said) if said else "as declared"


#: How many of the newest runs `source_columns` reads to find the newest totesys one (courier
#: runs come between them; past these, status says nothing rather than list the lake).
NEWEST_RUNS_READ = 20


def source_columns(bucket: str) -> dict | None:
    """What the newest totesys ingest run recorded of the source's columns, or None if none is found.

    The polling run records a stopped table as `stopped` {table: {"missing": [...], ...}}, the CDC
    run as `cdc_stopped` {table: [...]}; both record `new_columns` {table: [...]}. A manifest that
    is not JSON, or fields of another shape, are skipped: status shows what it can, never fails.
    """
    for n, run_id in enumerate(newest_runs_first(bucket)):
        if n == NEWEST_RUNS_READ:
            return None
        try:
            manifest = manifests.read(bucket, run_id)
        except (InvalidInput, ClientError):
            continue
        if manifest.get("stage") != "ingest" or manifests.is_courier(manifest):
            continue
        missing = _table_columns(manifest.get("stopped"), lambda e: e.get("missing") if isinstance(e, dict) else None)
        stopped = {**missing, **_table_columns(manifest.get("cdc_stopped"), lambda e: e)}
        return {"run_id": run_id, "stopped": dict(sorted(stopped.items())),
                "new_columns": _table_columns(manifest.get("new_columns"), lambda e: e)}
    return None


def _table_columns(field, columns_of) -> dict[str, list[str]]:
    """`{table: [column, ...]}` from a manifest field, keeping only well-formed entries."""
    if not isinstance(field, dict):
        return {}
    found = {}
    for table, entry in sorted(field.items()):
        columns = columns_of(entry)
        if isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns):
            found[str(table)] = [str(c) for c in columns]
    return found


def _failure(failure: dict) -> str:
    return f"{failure.get('at', '?')}: {failure.get('error_kind', '?')}: {failure.get('reason', '')}"


def _held(counts: dict) -> str:
    """`12 rows in 4 files` / `1 file`: what a reader counts is rows (or events), not reason files."""
    entries = f"{counts['entries']} file{'s' if counts['entries'] != 1 else ''}"
    return f"{counts['rows']:,} row(s) in {entries}" if counts["rows"] is not None else entries


def quarantined_counts(held: list[quarantine.Held]) -> dict[str, dict]:
    """Per kind: the reason files and the rows they hold back (None where every one is a whole file)."""
    counts: dict[str, dict] = {}
    for entry in held:
        kind = counts.setdefault(entry.kind, {"entries": 0, "rows": None})
        kind["entries"] += 1
        if entry.rows is not None:
            kind["rows"] = (kind["rows"] or 0) + entry.rows
    return counts


@dataclass
class _Warehouse:
    mark: str | None = None
    loaded: str | None = None
    loaded_at: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    newest_fx: str | None = None
    done: set[str] = field(default_factory=set)


def status(settings: Settings | None = None, now: datetime | None = None) -> Status:
    settings = settings or Settings.from_env()
    now = now or datetime.now(timezone.utc)
    unreachable: dict[str, str] = {}
    warehouse = _Warehouse()
    conn = None
    try:
        conn = connect(settings.warehouse, application_name="totesys-etl status")
        warehouse = _read_warehouse(conn)
    except (EtlError, DatabaseError, InterfaceError) as e:  # down, or gone mid-query: named, the lake shown
        unreachable["warehouse"] = describe(e)
    try:
        start = warehouse.mark or lake.run_id_at(now - FIRST_LOOK)
        ingested = lake.runs_after(settings.ingest_bucket, start)
        processed = lake.runs_after(settings.processed_bucket, start)
        if conn is not None and warehouse.loaded:
            warehouse.done = loaded_runs(conn, ingested)
        lake_side = _read_lake(settings)
    except (BotoCoreError, ClientError, LakeUnavailable) as e:
        unreachable["S3 API"] = describe(e)
        ingested, processed, lake_side = [], [], {"process_mark": None, "quarantined": {}, "failures": {},
                                                  "landing": None, "source_columns": None}
    finally:
        if conn is not None:
            conn.close()
    processed_set = set(processed)
    pending_process = [r for r in ingested if r not in processed_set]
    pending_load = [r for r in ingested if r not in warehouse.done] if "warehouse" not in unreachable else []
    lag = None
    if warehouse.loaded:
        lag = (now - datetime.strptime(warehouse.loaded, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
               ).total_seconds()
    stage_failures = lake_side["failures"]
    return Status(
        ingest=StageStatus(ingested[-1] if ingested else None, None, [], stage_failures.get("ingest")),
        process=StageStatus(processed[-1] if processed else None, lake_side["process_mark"], pending_process,
                            stage_failures.get("process"), _mark_note(ingested, pending_process, now)),
        load=StageStatus(warehouse.loaded, warehouse.mark, pending_load, stage_failures.get("load"),
                         _mark_note(ingested, pending_load, now)),
        quarantined=lake_side["quarantined"], warehouse_rows=warehouse.rows, loaded_at=warehouse.loaded_at,
        lag_seconds=lag, newest_fx_date=warehouse.newest_fx, landing=lake_side["landing"],
        fx_failure=stage_failures.get(FX_FAILURES), unreachable=unreachable,
        source_columns=lake_side["source_columns"],
        settle_seconds=lake.settle_period().total_seconds(),
        cdc_slot=cdc_status(settings.source, CdcSettings.from_env().slot) if source_mode() == "cdc" else None)


def _mark_note(ingested: list[str], pending: list[str], now: datetime) -> str:
    """Why a sweep's low-water mark is not set yet (`runs.py` moves it only over settled, finished runs)."""
    if not ingested:
        return "no run in the last day"
    settled = lake.settled(ingested, now)
    if not settled:
        return (f"every run is younger than TOTESYS_SETTLE_SECONDS ({lake.settle_period().total_seconds():,.0f} s), "
                f"and a mark never passes a run that young")
    if pending and pending[0] <= settled[-1]:
        return f"run {pending[0]} is not done"
    return "the sweep has not run since the runs settled"


def _read_lake(settings: Settings) -> dict:
    """The lake's bookkeeping that status shows: the processor's mark, what is held back, the failures."""
    return {
        "process_mark": lake.read_mark(settings.processed_bucket, PROCESS_MARK_PREFIX),
        "quarantined": quarantined_counts(quarantine.listed(settings.processed_bucket)),
        "failures": {stage: failures.newest(settings.processed_bucket if bucket == "TOTESYS_PROCESSED_BUCKET"
                                            else settings.ingest_bucket, stage)
                     for stage, bucket in failures.BUCKET_VARIABLE.items()},
        "landing": landed.landing_counts(settings) if settings.landing_bucket else None,
        "source_columns": source_columns(settings.ingest_bucket),
    }


def _read_warehouse(conn: Connection) -> _Warehouse:
    """The loader's mark, the newest loaded run and when, every counted table's rows, the newest FX day;
    all empty before a first load."""
    try:
        mark = load_mark(conn)
        newest = conn.run("SELECT run_id, loaded_at::text FROM etl_load_ledger ORDER BY run_id DESC LIMIT 1")
    except DatabaseError as e:
        if sqlstate(e) == "42P01":  # no schema yet
            return _Warehouse()
        raise
    rows = {}
    for table in COUNTED_TABLES:  # a further source's table exists once its migration has run
        if conn.run("SELECT to_regclass(:t)", t=table.name)[0][0] is not None:
            rows[table.name] = conn.run(f"SELECT count(*) FROM {identifier(table.name)}")[0][0]  # nosec B608
    newest_fx = None
    if FACT_EXCHANGE_RATE.name in rows:
        newest_fx = conn.run(f"SELECT max(rate_date)::text FROM {identifier(FACT_EXCHANGE_RATE.name)}")[0][0]  # nosec
    return _Warehouse(mark, newest[0][0] if newest else None, newest[0][1] if newest else None, rows, newest_fx)
