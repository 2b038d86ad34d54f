"""One CDC ingest run (contract §10): the slot's changes between two LSNs, as the lake's CSVs and a
manifest, then the slot advanced.

Order makes a crash harmless, as in the polling run: CSVs first (create-only, per-run keys), the
manifest `_runs/<run_id>.json` next, and only then `pg_replication_slot_advance`. The manifest, not
the slot, says what the lake holds: a run ships the transactions whose commit record starts in
`[lsn_from, lsn_to)`, and the next run starts at this run's `lsn_to`, so a crash after the
manifest (slot not advanced) re-reads those transactions and drops them, and a crash before it
reads them again for a run that does exist.

- **The first run** (or one after the slot was recreated) copies the eleven tables whole in one
  REPEATABLE READ transaction, and records that snapshot with the WAL insert position after it.
  Every transaction the slot holds from its position on is shipped by later runs, except one
  committed before that position and visible in that snapshot: its rows are in the copy already.
  So the snapshot lines up with the slot with no exported snapshot and no held connection.
- **One run at a time.** A session advisory lock on the source serialises CDC runs (two runs
  reading the same slot range would ship it twice); it dies with the session, so a crashed run
  never blocks the next. Run ids then follow LSN order.
- **Bounded.** A run reads at most `TOTESYS_CDC_MAX_CHANGES` row messages (whole transactions),
  leaving the rest to the next run.
- **Deletes** go to `deleted_row/.../deleted_row_<run_id>.csv` (schema/cdc.py: `source_table`,
  `source_id`, `deleted_at` from the commit time), a file of the run like a table's.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime

from pg8000.native import DatabaseError, InterfaceError

from totesys_etl import lake
from totesys_etl import manifest as manifests
from totesys_etl.adapters import postgres, s3
from totesys_etl.config import Database, Settings
from totesys_etl.errors import (ConfigurationError, EtlError, InvalidInput, SourceSchemaChanged, SourceUnavailable,
                                describe, lake_errors)
from totesys_etl.faults import crash_point
from totesys_etl.ingest import fx
from totesys_etl.ingest.cdc import pgoutput, slot as slots
from totesys_etl.ingest.cdc.copy import Copy, copy_tables, source_shape
from totesys_etl.ingest.cdc.files import collision, upload, write_csv
from totesys_etl.ingest.cdc.fold import Fold, TableChanges
from totesys_etl.ingest.cdc.settings import CdcSettings
from totesys_etl.ingest.watermark import newest_runs_first, next_run_id
from totesys_etl.logs import StageLog, Timer
from totesys_etl.runs import RunResult
from totesys_etl.schema import DELETED_ROW, SOURCE_TABLES

#: The manifest's `source_mode` for a CDC run.
MODE = "cdc"
#: Serialises CDC runs on one source (any 64-bit constant; the polling run's lock is another).
CDC_LOCK_KEY = 0x746F7465_73797363  # "totesysc"
#: The `error_kind` of the retained-WAL ERROR (contract §10): a line, not an exception (the run goes on).
SLOT_LAG = "cdc_slot_lag"
ALL_TABLES = frozenset(t.name for t in SOURCE_TABLES)
#: Manifest fields: tables stopped for missing columns (table -> those columns), and the copies that
#: resumed stopped tables (table -> `Copy`), carried while the slot may still hold what they cover.
STOPPED, COPIES = "cdc_stopped", "cdc_copies"


class SlotUnusable(EtlError):
    """The replication slot is missing, lost or not a pgoutput slot: nothing can be read."""

    error_kind = "cdc_slot_lost"


@dataclass(frozen=True)
class Position:
    """Where the lake stands in the slot: the previous CDC run, its `lsn_to`; while they matter the
    first snapshot (`snapshot`, every table) and the copies that resumed stopped tables (`copies`);
    and the tables stopped for a missing column (`stopped`, table -> those columns)."""

    run_id: str
    lsn_to: int
    snapshot: Copy | None = None
    fx: fx.FxMark = fx.FxMark()  # where FX stands (ingest/fx.py), carried from run to run
    copies: dict[str, Copy] = field(default_factory=dict)
    stopped: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Position":
        snapshot = manifest.get("cdc_snapshot")
        newest_fx = manifest.get(fx.FX_FIELD)
        if newest_fx is not None and date.fromisoformat(newest_fx).isoformat() != newest_fx:
            raise ValueError("fx is not a YYYY-MM-DD date")
        fx_mark = fx.FxMark(newest_fx, fx.parse_behind(manifest.get(fx.BEHIND_FIELD)))
        copies, stopped = manifest.get(COPIES, {}), manifest.get(STOPPED, {})
        if not (isinstance(copies, dict) and isinstance(stopped, dict) and set(copies) | set(stopped) <= ALL_TABLES
                and all(isinstance(c, list) for c in stopped.values())):
            raise ValueError(f"{COPIES} or {STOPPED} is not an object of the tables the pipeline reads")
        copies = {table: Copy.from_json(entry) for table, entry in copies.items()}
        stopped = {table: tuple(str(c) for c in columns) for table, columns in stopped.items()}
        return cls(manifest["run_id"], pgoutput.parse_lsn(manifest["lsn_to"]),
                   Copy.from_json(snapshot) if snapshot else None, fx_mark, copies, stopped)

    def in_copies(self, commit_lsn: int, xid: int) -> frozenset[str]:
        """The tables whose changes in this transaction are in a copy the lake holds already."""
        if self.snapshot is not None and self.snapshot.covers(commit_lsn, xid):
            return ALL_TABLES
        return frozenset(t for t, c in self.copies.items() if c.covers(commit_lsn, xid))


def previous_position(bucket: str, log: StageLog, before: str | None = None) -> Position | None:
    """The newest CDC run's position (before run id `before`, if given), or None: no run yet, or the
    newest totesys run polled.

    Listed newest first from the recent past, further back only when needed (as the polling
    ingest does); courier runs are not totesys runs and are passed over; a corrupt manifest is
    skipped with a warning, never trusted. A manifest dated at or after `before` (this run's id,
    which follows every run within MAX_CLOCK_STEP of the clock) is a stray or forged key, never
    the previous run, as in the polling ingest."""
    for run_id in newest_runs_first(bucket):
        try:
            manifest = manifests.read_if_present(bucket, run_id)
        except InvalidInput as e:
            log.warning(f"skipping a corrupt manifest: {e}", previous_run_id=run_id)
            continue
        if manifest is None or manifests.is_courier(manifest):
            continue
        if before is not None and run_id >= before:
            log.warning("the newest manifest is dated after this run: ignored", previous_run_id=run_id)
            continue
        if manifest.get("source_mode") != MODE:
            log.warning("the newest totesys run polled: this CDC run takes a full snapshot", previous_run_id=run_id)
            return None
        try:
            return Position.from_manifest(manifest)
        except (KeyError, TypeError, ValueError) as e:
            log.warning(f"skipping a corrupt manifest: {describe(e)}", previous_run_id=run_id)
    return None


def ingest(settings: Settings, log: StageLog | None = None, cdc: CdcSettings | None = None) -> RunResult:
    """Ship the slot's next changes (or the first snapshot) into `settings.ingest_bucket`."""
    log = log or StageLog("ingest")
    cdc = cdc or CdcSettings.from_env()
    timer = Timer()
    bucket = settings.ingest_bucket
    conn = postgres.connect(settings.source, application_name="totesys-etl-ingest-cdc")
    try:
        try:
            conn.run("SELECT pg_advisory_lock(CAST(:key AS bigint))", key=CDC_LOCK_KEY)
            conn.run("SET DateStyle = 'ISO, MDY'")  # timestamps as COPY writes them: YYYY-MM-DD HH:MM:SS[.f]
            state = _usable_slot(conn, cdc, log)
            run_id = _run_id(conn, bucket, log)
            log.fields["run_id"] = run_id
            previous = previous_position(bucket, log, before=run_id)
            if previous is not None and state.confirmed_flush > previous.lsn_to:
                log.warning("the slot is ahead of the lake (recreated?): taking a full snapshot",
                            previous_run_id=previous.run_id)
                previous = None
            with tempfile.TemporaryDirectory(prefix="totesys-cdc-") as folder:
                if previous is None:
                    manifest = _snapshot_run(conn, settings.source, bucket, run_id, state, folder, log)
                else:
                    manifest = _changes_run(conn, settings.source, bucket, run_id, previous, cdc, folder, log)
            previous_fx = previous.fx if previous else fx.FxMark()
            fx_inputs = fx.read_inputs(conn, previous_fx) if fx.enabled() else None
        except (DatabaseError, InterfaceError) as e:
            raise SourceUnavailable(f"reading the source's slot failed: {describe(e)}") from None
        fx.add_to_manifest(settings, manifest, fx_inputs, previous_fx, log)
        if manifest["files"]:
            crash_point("ingest.before_manifest")
        key = lake.manifest_key(run_id)
        with lake_errors(bucket, key):
            if not manifests.write(bucket, manifest) and not s3.holds(bucket, key, body=s3.json_body(manifest)):
                raise collision(run_id)
        crash_point("ingest.after_manifest")
        try:
            slots.advance(conn, cdc.slot, pgoutput.parse_lsn(manifest["lsn_to"]))
        except (DatabaseError, InterfaceError) as e:  # harmless: the next run drops what the lake holds
            log.warning(f"the slot was not advanced: {describe(e)}")
    finally:
        postgres.close_quietly(conn)  # the lock goes with the session
    result = RunResult(run_id, manifest["rows"], timer.seconds, files=len(manifest["files"]))
    log.info("ingest run written", files=result.files, rows=sum(result.rows.values()), seconds=result.seconds,
             previous_run_id=manifest["previous_run_id"], read=manifest["read"], lsn_from=manifest["lsn_from"],
             lsn_to=manifest["lsn_to"])
    return result


def _usable_slot(conn, cdc: CdcSettings, log: StageLog) -> slots.SlotState:
    """The slot's state, or SlotUnusable with the one line that says how to recover; logs the
    `cdc_slot_lag` ERROR (the run still goes on: reading is what frees the WAL)."""
    if not slots.may_replicate(conn):
        raise ConfigurationError("TOTESYS_SOURCE_URL's role may not read replication slots: cdc mode needs a "
                                 "LOGIN REPLICATION role (on RDS a member of rds_replication): readme_files/cdc.md")
    state = slots.slot_state(conn, cdc.slot)
    recovery = (f"recreate it (readme_files/cdc.md: SELECT pg_create_logical_replication_slot('{cdc.slot}', "
                "'pgoutput')); the next run then takes a full snapshot, which ships nothing twice downstream")
    if state is None:
        raise SlotUnusable(f"replication slot {cdc.slot} does not exist in the source: {recovery}")
    if state.lost:
        raise SlotUnusable(f"replication slot {cdc.slot} is lost (its WAL was removed): drop it and {recovery}")
    if state.plugin != "pgoutput":
        raise SlotUnusable(f"replication slot {cdc.slot} uses {state.plugin}, not pgoutput: {recovery}")
    if state.retained_bytes > cdc.max_lag_bytes:
        log.error(f"replication slot {cdc.slot} retains {state.retained_bytes >> 20} MB of WAL, over "
                  f"TOTESYS_CDC_MAX_LAG_MB ({cdc.max_lag_bytes >> 20}): the source's disk fills if this goes on",
                  SLOT_LAG, retained_mb=state.retained_bytes >> 20)
    return state


def _run_id(conn, bucket: str, log: StageLog) -> str:
    """The run named by the database's clock, after every totesys run in the lake whatever the clock
    or the mode did (`next_run_id`; CDC runs are serialised by the lock, so this is LSN order)."""
    now: datetime = conn.run("SELECT clock_timestamp()")[0][0]
    return next_run_id(bucket, now, log)


def _snapshot_run(conn, source: Database, bucket: str, run_id: str, state: slots.SlotState, folder: str,
                  log: StageLog) -> dict:
    lacking, added = source_shape(conn)
    copied = [t for t in SOURCE_TABLES if t.name not in lacking]
    copy, files, rows = copy_tables(conn, source, bucket, run_id, copied, folder, log)
    rows.update({name: 0 for name in lacking})
    lsn = pgoutput.lsn_text(state.confirmed_flush)
    # `complete`: every table is a whole image, so an id the warehouse holds that it lacks was deleted
    # before the snapshot (after a mode switch or a recreated slot, no slot recorded that delete).
    watermark = {"source_mode": MODE, "read": "snapshot", "lsn_from": lsn, "lsn_to": lsn,
                 "cdc_snapshot": copy.to_json(), manifests.COMPLETE_FIELD: [t.name for t in copied]}
    _stopped(watermark, lacking, added, log)
    return manifests.ingest_manifest(run_id, None, watermark, files, rows)


def _stopped(watermark: dict, stopped: dict[str, tuple[str, ...]], added: dict[str, list[str]], log: StageLog
             ) -> None:
    """One ERROR per stopped table and run while it lasts (contract §2: its own alarm), and the tables
    in the manifest, so that the next run goes on passing them over until their columns are back;
    the columns the source added, as the polling run records them."""
    for table, columns in sorted(stopped.items()):
        log.error(f"source table {table} lacks column(s) {', '.join(columns)}: {table} is not shipped until they "
                  "are back, then copied whole; every other table goes on", SourceSchemaChanged.error_kind,
                  table=table, columns=list(columns))
    if stopped:
        watermark[STOPPED] = {table: list(columns) for table, columns in sorted(stopped.items())}
    if added:
        watermark["new_columns"] = added


def _changes_run(conn, source: Database, bucket: str, run_id: str, previous: Position, cdc: CdcSettings,
                 folder: str, log: StageLog) -> dict:
    upto = max(slots.flush_lsn(conn), previous.lsn_to)
    fold = Fold(SOURCE_TABLES, {**previous.stopped, **source_shape(conn)[0]})
    messages, last_end, shipping, committed_at = 0, None, False, None
    for _, _, data in slots.peek(conn, cdc.slot, cdc.publication, upto, cdc.max_changes):
        messages += 1
        kind = data[:1]
        if kind == b"B":  # whole committed transactions only: decided here, nothing buffered
            begin = pgoutput.decode(data)
            fold.skip = previous.in_copies(begin.final_lsn, begin.xid)
            shipping = previous.lsn_to <= begin.final_lsn < upto and fold.skip != ALL_TABLES
            committed_at = begin.committed_at
        elif kind == b"C":
            last_end, shipping = pgoutput.decode(data).end_lsn, False
        elif kind == b"R":  # shapes matter whether or not this transaction ships
            fold.relation(pgoutput.decode(data))
        elif shipping and kind in b"IUDT":
            fold.change(pgoutput.decode(data), committed_at)
    bounded = messages >= cdc.max_changes and last_end is not None
    lsn_to = last_end if bounded else upto
    files, rows = {}, {}
    for table in SOURCE_TABLES:
        changes = fold.changes[table.name]
        rows[table.name] = len(changes.versions)
        if changes.versions:
            path = os.path.join(folder, f"{table.name}.csv")
            write_csv(path, table.column_names, changes.versions.values())
            files[table.name] = upload(bucket, table, run_id, path, rows[table.name])
    watermark = {"source_mode": MODE, "read": "bounded" if bounded else "changes",
                 "lsn_from": pgoutput.lsn_text(previous.lsn_to), "lsn_to": pgoutput.lsn_text(lsn_to)}
    if previous.snapshot is not None and lsn_to < previous.snapshot.lsn:  # the filter still matters
        watermark["cdc_snapshot"] = previous.snapshot.to_json()
    copies = dict(previous.copies)
    lacking, added = source_shape(conn)  # after the read: a stopped table whose columns are back resumes now
    resumed = [t for t in SOURCE_TABLES if t.name in fold.stopped and t.name not in lacking]
    if resumed:
        names = [t.name for t in resumed]
        log.warning(f"source table(s) {', '.join(names)} have their columns again: copied whole in this run, "
                    "lined up with the slot", tables=names)
        copy, copied_files, copied_rows = copy_tables(conn, source, bucket, run_id, resumed, folder, log)
        files.update(copied_files)
        rows.update(copied_rows)
        copies.update({name: copy for name in names})
        watermark[manifests.COMPLETE_FIELD] = names  # a whole image: ids it lacks were deleted meanwhile
    copies = {name: copy for name, copy in copies.items() if lsn_to < copy.lsn}  # what the slot may still hold
    if copies:
        watermark[COPIES] = {name: copy.to_json() for name, copy in sorted(copies.items())}
    _stopped(watermark, {t: lacking[t] for t in fold.stopped if t in lacking}, added, log)
    versions, deletes = sum(rows.values()), _deletes(fold.changes)
    rows[DELETED_ROW.name] = len(deletes)
    if deletes:
        path = os.path.join(folder, f"{DELETED_ROW.name}.csv")
        write_csv(path, DELETED_ROW.column_names, deletes)
        files[DELETED_ROW.name] = upload(bucket, DELETED_ROW, run_id, path, len(deletes))
    log.info("slot read", messages=messages, versions=versions, deleted=len(deletes), bounded=bounded)
    return manifests.ingest_manifest(run_id, previous.run_id, watermark, files, rows)


def _deletes(changes: dict[str, TableChanges]) -> list[tuple]:
    """(source_table, source_id, deleted_at) in table and id order; commit times as UTC text."""
    out = []
    for name, table_changes in changes.items():
        for key, at in sorted(table_changes.deleted.items(), key=lambda kv: int(kv[0])):
            out.append((name, key, at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")))
    return out
