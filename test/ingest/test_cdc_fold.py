"""The fold's per-table stop (contract §2 in cdc mode), on decoded messages: no database needed."""
from datetime import datetime, timezone

from totesys_etl.ingest.cdc.fold import Fold
from totesys_etl.ingest.cdc.pgoutput import Insert, Relation, RelationColumn
from totesys_etl.schema import SOURCE_TABLES

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
STAFF = next(t for t in SOURCE_TABLES if t.name == "staff")


def _relation(relation_id: int, names) -> Relation:
    return Relation(relation_id, "public", "staff", "f", tuple(RelationColumn(n, 25, -1, False) for n in names))


def _insert(relation_id: int, names, staff_id: str) -> Insert:
    return Insert(relation_id, tuple(staff_id if n == "staff_id" else f"{n} {staff_id}" for n in names))


def test_a_change_with_a_missing_column_stops_the_table_and_drops_what_the_run_held_of_it():
    fold = Fold(SOURCE_TABLES)
    whole = STAFF.column_names
    fold.relation(_relation(1, whole))
    fold.change(_insert(1, whole, "1"), AT)
    assert list(fold.changes["staff"].versions) == ["1"]
    lacking = [n for n in whole if n != "email_address"]
    fold.relation(_relation(1, lacking))
    assert fold.stopped == {}  # a shape alone stops nothing
    fold.change(_insert(1, lacking, "2"), AT)
    assert fold.stopped == {"staff": ("email_address",)} and fold.changes["staff"].versions == {}
    fold.relation(_relation(1, whole))
    fold.change(_insert(1, whole, "3"), AT)  # stopped for the rest of the run: its copy will hold it
    assert fold.changes["staff"].versions == {}


def test_a_change_a_copy_holds_already_is_passed_over_whatever_its_shape():
    """A transaction the copy that resumed the table holds: its old shape must not stop the table again."""
    fold = Fold(SOURCE_TABLES)
    lacking = [n for n in STAFF.column_names if n != "email_address"]
    fold.relation(_relation(1, lacking))
    fold.skip = frozenset({"staff"})
    fold.change(_insert(1, lacking, "2"), AT)
    assert fold.stopped == {} and fold.changes["staff"].versions == {}
