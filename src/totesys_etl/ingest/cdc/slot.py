"""The replication slot over plain SQL: its state, a bounded read, and the advance after a manifest.

Reading with `pg_logical_slot_peek_binary_changes` consumes nothing: the slot moves only when
`advance` is called, which the run does after its manifest exists, so a crash anywhere before
reads the same changes again (contract §10 "Exactly once"). The read goes through a cursor so
that the client holds one batch at a time; the server decodes whole committed transactions only,
and stops after the first transaction that reaches `max_changes` (so one huge transaction is
read whole, the one overshoot the SQL interface allows).

Slot and publication names come from configuration: they are checked against PostgreSQL's own
rule for slot names (lowercase letters, digits, underscores, at most 63) and then travel only as
bind parameters, never as SQL text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from pg8000.native import DatabaseError

from totesys_etl.adapters.postgres import Connection, close_quietly, connect, transaction
from totesys_etl.config import Database
from totesys_etl.errors import ConfigurationError, EtlError, describe
from totesys_etl.ingest.cdc.pgoutput import lsn_text

_NAME = re.compile(r"[a-z0-9_]{1,63}")
#: Rows fetched from the cursor per round trip.
FETCH_ROWS = 2000


def checked_name(setting: str, value: str) -> str:
    """A slot or publication name from configuration, or ConfigurationError (exit 2)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigurationError(f"{setting} must be 1 to 63 lowercase letters, digits or underscores")
    return value


@dataclass(frozen=True)
class SlotState:
    """What `pg_replication_slots` says of the slot (None for a slot that does not exist).

    `retained_bytes` is the WAL the server keeps for it (from its restart LSN to the current WAL
    position); `wal_status` is `reserved`, `extended`, `unreserved` or `lost` (a lost slot can
    never be read again: its changes are gone)."""

    plugin: str
    database: str
    confirmed_flush: int
    restart_lsn: int | None
    wal_status: str | None
    retained_bytes: int
    active: bool
    unread_bytes: int = 0  # WAL written since the slot's position: changes not read yet, or other WAL

    def to_json(self) -> dict:
        """What `status` shows (contract §10): the WAL kept, and where the oldest unread change may start."""
        return {"wal_status": self.wal_status, "retained_mb": round(self.retained_bytes / (1 << 20), 1),
                "unread_mb": round(self.unread_bytes / (1 << 20), 1),
                "oldest_unread_lsn": lsn_text(self.confirmed_flush)}

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost" or self.restart_lsn is None


def slot_state(conn: Connection, slot: str) -> SlotState | None:
    rows = conn.run(
        "SELECT plugin, database, (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint,"
        " (restart_lsn - '0/0'::pg_lsn)::bigint, wal_status,"
        " coalesce((pg_current_wal_lsn() - restart_lsn)::bigint, 0), active,"
        " coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, 0)"
        " FROM pg_replication_slots WHERE slot_name = :slot AND slot_type = 'logical'", slot=slot)
    if not rows:
        return None
    plugin, database, confirmed, restart, status, retained, active, unread = rows[0]
    return SlotState(plugin, database, int(confirmed or 0), None if restart is None else int(restart), status,
                     int(retained), bool(active), int(unread))


def may_replicate(conn: Connection) -> bool:
    """True if the session's role may read slots: a superuser, a REPLICATION role, or on RDS a
    member of `rds_replication` (RDS grants no REPLICATION attribute)."""
    return bool(conn.run(
        "SELECT r.rolsuper OR r.rolreplication OR coalesce(pg_has_role(current_user, to_regrole('rds_replication'),"
        " 'MEMBER'), false) FROM pg_roles r WHERE r.rolname = current_user")[0][0])


def flush_lsn(conn: Connection) -> int:
    """The WAL flushed so far: the furthest a read can see (decoding reads only flushed WAL)."""
    return int(conn.run("SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint")[0][0])


def peek(conn: Connection, slot: str, publication: str, upto_lsn: int, max_changes: int
         ) -> Iterator[tuple[int, int, bytes]]:
    """(lsn, xid, pgoutput message) of every change the slot holds that committed before `upto_lsn`,
    in commit order, up to the end of the transaction that reaches `max_changes` rows.

    Runs in its own READ ONLY transaction (the cursor lives in it); the caller's connection is
    back outside any transaction once the iterator is exhausted or closed.
    """
    with transaction(conn, read_only=True):
        conn.run("DECLARE cdc_changes NO SCROLL CURSOR FOR"
                 " SELECT (lsn - '0/0'::pg_lsn)::bigint, xid::text::bigint, data"
                 " FROM pg_logical_slot_peek_binary_changes(:slot, CAST(:upto AS pg_lsn), :max_changes,"
                 " 'proto_version', '1', 'publication_names', :publication)",
                 slot=slot, upto=lsn_text(upto_lsn), max_changes=max_changes, publication=publication)
        while True:
            rows = conn.run(f"FETCH {FETCH_ROWS} FROM cdc_changes")
            for lsn, xid, data in rows:
                yield int(lsn), int(xid), bytes(data)
            if len(rows) < FETCH_ROWS:
                break
        conn.run("CLOSE cdc_changes")


def advance(conn: Connection, slot: str, lsn: int) -> None:
    """Move the slot to `lsn` (never back: PostgreSQL ignores a position behind it), so the server
    may drop the WAL before it. Only called once a manifest records that every change before
    `lsn` is in the lake."""
    conn.run("SELECT pg_replication_slot_advance(:slot, CAST(:lsn AS pg_lsn))", slot=slot, lsn=lsn_text(lsn))


def cdc_status(source: Database, slot: str) -> dict:
    """The slot as `status` shows it: `{"slot", "wal_status", "retained_mb", "unread_mb",
    "oldest_unread_lsn"}`, or `{"slot", "error"}` naming what could not be read (never a credential)."""
    try:
        conn = connect(source, application_name="totesys-etl status")
    except EtlError as e:
        return {"slot": slot, "error": f"source not reachable: {describe(e)}"}
    try:
        state = slot_state(conn, slot)
    except DatabaseError as e:
        return {"slot": slot, "error": f"source: {describe(e)}"}
    finally:
        close_quietly(conn)
    if state is None:
        return {"slot": slot, "error": "does not exist (readme_files/cdc.md: recreate it)"}
    return {"slot": slot, **state.to_json()}
