"""Transaction ids wrap (contract §2): old rows are frozen but keep their raw `xmin`, which can equal an
id in use today. A cluster in a later epoch comes from pg_resetwal after a VACUUM FREEZE of
everything, the state a years-old source is in."""
from __future__ import annotations

import pytest

from totesys_etl.config import Settings
from totesys_etl.ingest.run import ingest

pytestmark = pytest.mark.slow
EPOCH = 1 << 32


def run():
    return ingest(Settings.from_env())


def test_a_frozen_rows_raw_xmin_equal_to_a_running_id_neither_hides_nor_ships_it(own_source, shipped, versions):
    """Issue 34.1: the seeded rows' raw xmin comes round again as the id of a running transaction
    while an older one is open. Its update must arrive once it commits; the frozen rows are old
    versions and are not shipped while that id runs."""
    raw = int(own_source.run("SELECT xmin::text FROM address LIMIT 1")[0][0])
    own_source.freeze_everything()
    own_source.set_next_xid(1, raw - 50)  # epoch 1, a little before the frozen rows' raw xmin
    first = run()
    assert first.rows["address"] == 3
    blocker, late = own_source.admin(), own_source.admin()
    try:
        blocker.run("BEGIN")
        blocker.run("INSERT INTO scratch VALUES (1)")  # an older id stays open: the next run's xmin
        own_source.consume_until(EPOCH + raw)
        late.run("BEGIN")
        late.run("UPDATE staff SET first_name = 'Late', last_updated = LOCALTIMESTAMP WHERE staff_id = 2")
        assert int(late.run("SELECT pg_current_xact_id()::text")[0][0]) == EPOCH + raw  # the frozen rows' raw id
        own_source.run("UPDATE design SET design_name = 'Meanwhile', last_updated = LOCALTIMESTAMP "
                       "WHERE design_id = 1")
        during = run()
        assert {t: [r[f"{t}_id"] for r in rows] for t, rows in shipped(during).items()} == {"design": ["1"]}
        late.run("COMMIT")
        blocker.run("COMMIT")
    finally:
        late.close()
        blocker.close()
    after = run()
    assert [(r["staff_id"], r["first_name"]) for r in shipped(after).get("staff", [])] == [("2", "Late")]
    assert run().files == 0
    counted = versions([first, during, after])
    staff = own_source.run("SELECT first_name FROM staff WHERE staff_id = 2")
    assert staff == [["Late"]]
    # The frozen rows whose raw id came round may be read once more when that id commits (the bound
    # in the README); no version of a row that id wrote is lost and none is shipped a third time.
    assert max(counted.values()) <= 2 and {k[0] for k, n in counted.items() if n > 1} <= {"address"}


def test_crossing_into_the_next_epoch_reads_no_version_of_the_previous_epoch_as_new(own_source, shipped, versions):
    """Issue 34.2: the epoch changes between two runs (ids ...4294967295 -> 3...). Versions written
    in the previous epoch are not read as new ids of this one, and what is written after arrives.

    The table rows seeded before pg_resetwal moved the counter are older than 2^32 ids here (as
    rows frozen years ago are): their raw xmin reads as an id handed out since the previous run,
    which is indistinguishable to a reader (PostgreSQL shows the raw xmin of a frozen row), so
    they are read once more, never twice (the bound in ADR 0001 and the README)."""
    own_source.freeze_everything()
    own_source.set_next_xid(0, EPOCH - 3000)
    own_source.run("UPDATE address SET city = 'Before the wrap', last_updated = LOCALTIMESTAMP WHERE address_id = 1")
    own_source.run("UPDATE staff SET first_name = 'Before the wrap', last_updated = LOCALTIMESTAMP WHERE staff_id = 3")
    first = run()
    assert first.rows["address"] == 3
    own_source.consume_ids(4000)  # past 2^32: the 64-bit ids now start with 1
    assert own_source.next_xid() > EPOCH
    own_source.run("UPDATE staff SET first_name = 'After the wrap', last_updated = LOCALTIMESTAMP WHERE staff_id = 1")
    after = run()
    shipped_after = shipped(after)
    assert ("1", "After the wrap") in [(r["staff_id"], r["first_name"]) for r in shipped_after["staff"]]
    written_before_the_wrap = [("address", r["address_id"]) for r in shipped_after.get("address", [])
                               if r["city"] == "Before the wrap"]
    written_before_the_wrap += [("staff", r["staff_id"]) for r in shipped_after["staff"]
                                if r["first_name"] == "Before the wrap"]
    assert written_before_the_wrap == []
    assert [run().files, run().files] == [0, 0]
    assert max(versions([first, after]).values()) <= 2
