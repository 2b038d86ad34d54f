"""Which database a run read, and whether it is still the history the previous run read (contract §2
"Restores and failovers").

Transaction ids alone cannot tell: a source restored from an older backup hands out ids again, and
they may catch up with the previous run's before the next one. So each run records facts the
read-only role can see that a restore or a failover changes whatever the ids do afterwards:

- the system identifier (`pg_control_system()`): another cluster altogether;
- the timeline: a promoted replica or a point-in-time restore starts a new one;
- the WAL position (`pg_current_wal_lsn()`, or on a hot standby `pg_last_wal_replay_lsn()`): a
  copy of an older cluster starts behind;
- the server's start time (`pg_postmaster_start_time()`) with its latest checkpoint: a restore,
  or a crash that lost asynchronous commits, needs a restart. After a restart the history is
  proven continuous only when the server started from a checkpoint at or past the previous run's
  WAL position (a clean shutdown after that run); otherwise the next run reads every row again.

`pg_control_system()` and `pg_control_checkpoint()` are executable by any role on PostgreSQL 15;
where a provider revokes them, the facts they give are recorded as null and not compared.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from totesys_etl.adapters.postgres import Connection

_ISO = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"
_STATEMENT = (
    "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')"  # nosec B608 - constant text
    "  THEN (SELECT system_identifier::text FROM pg_control_system()) END,"
    " CASE WHEN pg_is_in_recovery() THEN"
    "  CASE WHEN has_function_privilege('pg_control_checkpoint()', 'EXECUTE')"
    "   THEN (SELECT timeline_id FROM pg_control_checkpoint()) END"
    "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,"
    " (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"
    "  - '0/0'::pg_lsn)::text,"
    f" to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', {_ISO}),"
    " pg_is_in_recovery(),"
    " CASE WHEN has_function_privilege('pg_control_checkpoint()', 'EXECUTE')"
    "  THEN (SELECT (checkpoint_lsn - '0/0'::pg_lsn)::text FROM pg_control_checkpoint()) END,"
    " CASE WHEN has_function_privilege('pg_control_checkpoint()', 'EXECUTE')"
    f"  THEN (SELECT to_char(checkpoint_time AT TIME ZONE 'UTC', {_ISO}) FROM pg_control_checkpoint()) END")


@dataclass(frozen=True)
class Identity:
    """What the source is: see the module docstring. LSNs are byte positions (integers)."""

    system: str | None
    timeline: int | None
    lsn: int
    started_at: str
    standby: bool
    checkpoint_lsn: int | None = None
    checkpoint_at: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, entry) -> "Identity | None":
        """The identity a manifest recorded; None for one written before it was recorded (or unreadable)."""
        if not isinstance(entry, dict):
            return None
        try:
            return cls(_text(entry.get("system")), _int(entry.get("timeline")), int(entry["lsn"]),
                       str(entry["started_at"]), bool(entry.get("standby")), _int(entry.get("checkpoint_lsn")),
                       _text(entry.get("checkpoint_at")))
        except (KeyError, TypeError, ValueError):
            return None


def _int(value) -> int | None:
    return None if value is None else int(value)


def _text(value) -> str | None:
    return None if value is None else str(value)


def read_identity(conn: Connection) -> Identity:
    """The source's identity, read inside the run's snapshot transaction."""
    system, timeline, lsn, started_at, standby, checkpoint_lsn, checkpoint_at = conn.run(_STATEMENT)[0]
    return Identity(system, timeline, int(lsn), started_at, bool(standby), _int(checkpoint_lsn), checkpoint_at)


def history_broken(previous: Identity | None, current: Identity | None, previous_xmax: int, current_xmax: int
                   ) -> str | None:
    """Why the source is not the history the previous run read (a sentence for the warning), or None.
    `*_xmax` are the two runs' snapshot xmax: ids going back is the one sign older manifests give."""
    if current_xmax < previous_xmax:
        return f"its transaction ids went back ({previous_xmax} -> {current_xmax})"
    if previous is None or current is None:
        return None
    if previous.system and current.system and previous.system != current.system:
        return f"another database (system identifier {previous.system} -> {current.system})"
    if previous.timeline and current.timeline and previous.timeline != current.timeline:
        return f"a failover or a point-in-time restore (timeline {previous.timeline} -> {current.timeline})"
    if current.lsn < previous.lsn:
        return f"its WAL position went back ({_lsn(previous.lsn)} -> {_lsn(current.lsn)})"
    if current.started_at != previous.started_at and not current.standby and not _started_after(previous, current):
        return (f"it restarted ({previous.started_at} -> {current.started_at}) from a checkpoint before the previous "
                f"run's WAL position {_lsn(previous.lsn)} (a restored backup, or commits lost in a crash)")
    return None


def _started_after(previous: Identity, current: Identity) -> bool:
    """True when the restarted server provably began at or past the previous run's WAL position: its
    latest checkpoint is the one it started from (written before it started) and lies past that position."""
    return (current.checkpoint_lsn is not None and current.checkpoint_at is not None
            and current.checkpoint_at < current.started_at and current.checkpoint_lsn >= previous.lsn)


def _lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
