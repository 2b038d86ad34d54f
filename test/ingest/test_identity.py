"""Whether the source is still the history the previous run read (ingest/identity.py): each sign of a
restore or a failover, and what a clean restart looks like. The facts themselves are read from a
real cluster in test/ingest/years/test_restore_and_standby.py."""
from __future__ import annotations

from dataclasses import replace

from totesys_etl.ingest.identity import Identity, history_broken

BEFORE = Identity("7716", 1, 50_000, "2026-12-07T00:00:00.000000Z", False, 40_000, "2026-12-06T23:59:00.000000Z")


def test_the_same_server_further_on_is_the_same_history():
    later = replace(BEFORE, lsn=60_000, checkpoint_lsn=55_000, checkpoint_at="2026-12-07T00:05:00.000000Z")
    assert history_broken(BEFORE, later, 100, 120) is None
    assert history_broken(None, later, 100, 120) is None  # a manifest from before identities were recorded


def test_each_sign_of_another_history_is_named():
    assert "system identifier 7716 -> 9999" in history_broken(BEFORE, replace(BEFORE, system="9999", lsn=60_000),
                                                              100, 120)
    assert "timeline 1 -> 2" in history_broken(BEFORE, replace(BEFORE, timeline=2, lsn=60_000), 100, 120)
    assert "WAL position went back (0/C350 -> 0/9C40)" in history_broken(BEFORE, replace(BEFORE, lsn=40_000), 100, 120)
    assert "ids went back (120 -> 100)" in history_broken(BEFORE, BEFORE, 120, 100)


def test_a_restart_is_a_restore_unless_it_started_from_a_checkpoint_past_the_previous_run():
    clean = replace(BEFORE, lsn=60_000, started_at="2026-12-07T00:03:00.500000Z", checkpoint_lsn=52_000,
                    checkpoint_at="2026-12-07T00:03:00.000000Z")  # its shutdown checkpoint, before it started
    assert history_broken(BEFORE, clean, 100, 120) is None
    restored = replace(clean, checkpoint_lsn=30_000)  # started from a backup's older checkpoint
    assert "restarted" in history_broken(BEFORE, restored, 100, 120)
    checkpointed_since = replace(clean, checkpoint_at="2026-12-07T00:08:00.000000Z")  # cannot tell: read in full
    assert "restarted" in history_broken(BEFORE, checkpointed_since, 100, 120)
    assert history_broken(BEFORE, replace(restored, standby=True), 100, 120) is None  # replays the primary's WAL
    unknown = replace(clean, checkpoint_lsn=None, checkpoint_at=None)  # pg_control_checkpoint() revoked
    assert "restarted" in history_broken(BEFORE, unknown, 100, 120)


def test_an_identity_survives_the_manifest_and_a_bad_one_is_none():
    assert Identity.from_json(BEFORE.to_json()) == BEFORE
    assert Identity.from_json({"lsn": "x"}) is None and Identity.from_json(None) is None
