"""`totesys-etl status`: where the pipeline is, read from the lake and the warehouse alone.

Works against any deployment the settings point at (the local one or AWS's buckets and
warehouse): per stage the newest run, its low-water mark and the runs still pending; what is
held back, by kind; and in the warehouse the newest loaded run, the star tables' row counts and
the lag from that run's snapshot to now; and each stage's last failure with its one-line reason
(`failures.py`). Listings start at the loader's mark (or a day back before the first load), so the
cost does not grow with the lake.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from pg8000.native import identifier

from totesys_etl import failures, lake, landed, quarantine
from totesys_etl.adapters.postgres import Connection, DatabaseError, connect, sqlstate
from totesys_etl.config import Settings
from totesys_etl.load.ledger import load_mark, loaded_runs
from totesys_etl.ingest.cdc.settings import CdcSettings, source_mode
from totesys_etl.ingest.cdc.slot import cdc_status
from totesys_etl.process.run import MARK_PREFIX as PROCESS_MARK_PREFIX
from totesys_etl.schema import FACT_EXCHANGE_RATE, STAR_TABLES

#: Without a loader mark yet, the listings start this far back.
FIRST_LOOK = timedelta(days=1)


@dataclass
class StageStatus:
    newest_run: str | None = None
    mark: str | None = None
    pending: list[str] = field(default_factory=list)
    last_failure: dict | None = None   # {"at", "error_kind", "reason"} (failures.record)


@dataclass
class Status:
    ingest: StageStatus
    process: StageStatus
    load: StageStatus
    quarantined: dict[str, int]
    warehouse_rows: dict[str, int]
    loaded_at: str | None
    lag_seconds: float | None
    newest_fx_date: str | None = None  # the newest day in fact_exchange_rate (contract §9 FX rates)
    landing: dict | None = None  # courier files (contract §9): {"since", "pending", "taken"}, or None when off
    cdc_slot: dict | None = None  # cdc mode (contract §10): the slot's retained WAL, or why it could not be read

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{'stage':<8}{'newest run':<25}{'low-water mark':<25}pending"]
        for name in ("ingest", "process", "load"):
            stage: StageStatus = getattr(self, name)
            pending = f"{len(stage.pending)}" + (f" (oldest {stage.pending[0]})" if stage.pending else "")
            lines.append(f"{name:<8}{stage.newest_run or '-':<25}{stage.mark or '-':<25}{pending}")
            if stage.last_failure:
                failure = stage.last_failure
                lines.append(f"        last failure {failure.get('at', '?')}: {failure.get('error_kind', '?')}: "
                             f"{failure.get('reason', '')}")
        held = ", ".join(f"{kind} {n}" for kind, n in sorted(self.quarantined.items())) or "nothing"
        lines.append(f"held back: {held} (totesys-etl quarantine lists them)")
        if self.landing is not None:
            lines.append(f"landing: {self.landing['pending']} courier file(s) waiting, {self.landing['taken']} taken "
                         f"(since {self.landing['since'] or 'the first'})")
        lag = f"{self.lag_seconds:,.0f} s" if self.lag_seconds is not None else "-"
        lines.append(f"warehouse: newest run loaded at {self.loaded_at or '-'}, lag {lag}")
        lines += [f"  {table:<22}{rows:>12,}" for table, rows in self.warehouse_rows.items()]
        lines.append(f"FX rates: newest date {self.newest_fx_date or '-'}")
        if self.cdc_slot is not None:
            slot = self.cdc_slot
            state = slot["error"] if "error" in slot else (
                f"retains {slot['retained_mb']:,} MB of WAL ({slot['wal_status']}), "
                f"{slot['unread_mb']:,} MB written since its position {slot['oldest_unread_lsn']}")
            lines.append(f"replication slot {slot['slot']}: {state}")
        return "\n".join(lines)


def status(settings: Settings | None = None, now: datetime | None = None) -> Status:
    settings = settings or Settings.from_env()
    now = now or datetime.now(timezone.utc)
    conn = connect(settings.warehouse, application_name="totesys-etl status")
    try:
        mark, loaded, loaded_at, rows = _warehouse(conn)
        newest_fx = _newest_fx_date(conn)
        start = mark or lake.run_id_at(now - FIRST_LOOK)
        ingested = lake.runs_after(settings.ingest_bucket, start)
        processed = lake.runs_after(settings.processed_bucket, start)
        done = loaded_runs(conn, ingested) if loaded else set()
    finally:
        conn.close()
    process_mark = lake.read_mark(settings.processed_bucket, PROCESS_MARK_PREFIX)
    processed_set = set(processed)
    kinds = Counter(h.kind for h in quarantine.listed(settings.processed_bucket))
    lag = None
    if loaded:
        lag = (now - datetime.strptime(loaded, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)).total_seconds()
    return Status(
        ingest=StageStatus(ingested[-1] if ingested else None, None, [],
                           failures.newest(settings.ingest_bucket, "ingest")),
        process=StageStatus(processed[-1] if processed else None, process_mark,
                            [r for r in ingested if r not in processed_set],
                            failures.newest(settings.processed_bucket, "process")),
        load=StageStatus(loaded, mark, [r for r in ingested if r not in done],
                         failures.newest(settings.processed_bucket, "load")),
        quarantined=dict(kinds), warehouse_rows=rows, loaded_at=loaded_at, lag_seconds=lag,
        newest_fx_date=newest_fx,
        landing=landed.landing_counts(settings) if settings.landing_bucket else None,
        cdc_slot=cdc_status(settings.source, CdcSettings.from_env().slot) if source_mode() == "cdc" else None)


def _newest_fx_date(conn: Connection) -> str | None:
    """The newest rate date loaded (None before migration 4 or the first FX run)."""
    table = FACT_EXCHANGE_RATE.name
    if conn.run("SELECT to_regclass(:t)", t=table)[0][0] is None:
        return None
    return conn.run(f"SELECT max(rate_date)::text FROM {identifier(table)}")[0][0]  # nosec B608 - declared name


def _warehouse(conn: Connection) -> tuple[str | None, str | None, str | None, dict[str, int]]:
    """(loader mark, newest loaded run, when it was loaded, star rows); all empty before a first load."""
    try:
        mark = load_mark(conn)
        newest = conn.run("SELECT run_id, loaded_at::text FROM etl_load_ledger ORDER BY run_id DESC LIMIT 1")
        rows = {t.name: conn.run(f"SELECT count(*) FROM {identifier(t.name)}")[0][0]  # nosec B608
                for t in STAR_TABLES}
    except DatabaseError as e:
        if sqlstate(e) == "42P01":  # no schema yet
            return None, None, None, {}
        raise
    return mark, newest[0][0] if newest else None, newest[0][1] if newest else None, rows
