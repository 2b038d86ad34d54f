"""The pgoutput decoder against what PostgreSQL itself writes (the session cluster runs with
wal_level=logical), read through `pg_logical_slot_peek_binary_changes` as the ingest reads it."""
from __future__ import annotations

import os
import secrets

import pg8000.native
import pytest

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.ingest.cdc import pgoutput
from totesys_etl.ingest.cdc.pgoutput import UNCHANGED_TOAST, DecodeError
from totesys_etl.local.source import cdc as cdc_setup


@pytest.fixture
def db(source):
    """An admin connection to an empty source database with a publication and a slot on `t`."""
    conn = pg8000.native.Connection(**parse_url(source.admin_url))
    conn.run("SET synchronous_commit = on")  # the cluster's is off: decoding reads only flushed WAL
    conn.run("CREATE TABLE t (t_id serial PRIMARY KEY, name varchar NOT NULL, note varchar, big varchar,"
             " price numeric(10,2), paid boolean, at timestamp)")
    conn.run("CREATE PUBLICATION p FOR TABLE t")
    slot = f"test_{secrets.token_hex(6)}"
    cdc_setup.create_slot(conn, slot)
    conn.slot = slot
    yield conn
    cdc_setup.drop_slot(conn, slot)
    conn.close()


def changes(conn) -> list:
    rows = conn.run("SELECT data FROM pg_logical_slot_peek_binary_changes(:slot, NULL, NULL,"
                    " 'proto_version', '1', 'publication_names', 'p')", slot=conn.slot)
    return [pgoutput.decode(bytes(r[0])) for r in rows]


def rows_of(messages, kind) -> list:
    return [m for m in messages if isinstance(m, kind)]


def test_a_transaction_decodes_as_postgresql_wrote_it(db):
    awkward = 'a "quoted", comma\nnewline, émoji 🎉'
    db.run("SET DateStyle = 'ISO, MDY'")
    db.run("INSERT INTO t (name, note, price, paid, at) VALUES (:a, '', 12.50, true, '2024-01-02 03:04:05.678')"
           ", ('plain', NULL, NULL, NULL, NULL)", a=awkward)
    messages = changes(db)
    begin, relation, first, second, commit = messages
    assert isinstance(begin, pgoutput.Begin) and isinstance(commit, pgoutput.Commit)
    assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
    assert begin.committed_at == commit.committed_at
    assert relation.namespace == "public" and relation.name == "t" and relation.replica_identity == "d"
    assert relation.column_names == ("t_id", "name", "note", "big", "price", "paid", "at")
    assert [c.is_key for c in relation.columns] == [True] + [False] * 6
    assert [c.type_oid for c in relation.columns] == [23, 1043, 1043, 1043, 1700, 16, 1114]
    expected = ("1", awkward, "", None, "12.50", "t", "2024-01-02 03:04:05.678")
    assert first == pgoutput.Insert(relation.relation_id, expected)
    assert second.new == ("2", "plain", None, None, None, None, None)


def test_an_unchanged_toasted_value_is_left_out_unless_the_identity_is_full(db):
    big = os.urandom(150_000).hex()  # 300 kB that does not compress: stored out of line (TOAST)
    db.run("INSERT INTO t (name, big) VALUES ('x', :big)", big=big)
    db.run("UPDATE t SET name = 'y'")
    db.run("ALTER TABLE t REPLICA IDENTITY FULL")
    db.run("UPDATE t SET name = 'z'")
    db.run("DELETE FROM t")
    default, full = rows_of(changes(db), pgoutput.Update)
    assert default.old is None and default.new == ("1", "y", None, UNCHANGED_TOAST, None, None, None)
    assert full.old_kind == "O" and full.old[:4] == ("1", "y", None, big)
    assert full.new[3] is UNCHANGED_TOAST
    delete, = rows_of(changes(db), pgoutput.Delete)
    assert delete.old_kind == "O" and delete.old[:4] == ("1", "z", None, big)


def test_a_savepoint_rolled_back_leaves_nothing_and_truncate_and_a_dropped_column_decode(db):
    db.run("BEGIN")
    db.run("INSERT INTO t (name) VALUES ('kept')")
    db.run("SAVEPOINT s")
    db.run("INSERT INTO t (name) VALUES ('rolled back')")
    db.run("ROLLBACK TO s")
    db.run("COMMIT")
    db.run("ALTER TABLE t DROP COLUMN note")
    db.run("UPDATE t SET name = 'after'")
    db.run("TRUNCATE t")
    messages = changes(db)
    assert [m.new[1] for m in rows_of(messages, pgoutput.Insert)] == ["kept"]
    relations = rows_of(messages, pgoutput.Relation)
    assert "note" in relations[0].column_names and "note" not in relations[-1].column_names
    update, = rows_of(messages, pgoutput.Update)
    assert update.new[:2] == ("1", "after") and len(update.new) == 6
    truncate, = rows_of(messages, pgoutput.Truncate)
    assert truncate.relation_ids == (relations[0].relation_id,) and not truncate.cascade


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"), (b"Z\x00", "unknown message type"), (b"B\x00\x00", "ends at byte"),
    (b"I\x00\x00\x00\x01X", "not marked"), (b"I\x00\x00\x00\x01N\x00\x01q", "unknown column kind"),
    (b"Y\x00\x00\x00\x01public", "NUL"), (b"Y\x00\x00\x00\x01a\x00b\x00extra", "left after"),
])
def test_bytes_that_are_not_a_message_are_refused(data, reason):
    with pytest.raises(DecodeError, match=reason):
        pgoutput.decode(data)


@pytest.mark.parametrize("text, lsn", [("0/0", 0), ("0/157B4E0", 0x157B4E0), ("1A/FF", 0x1A << 32 | 0xFF),
                                       ("FFFFFFFF/FFFFFFFF", 2 ** 64 - 1)])
def test_lsn_text_round_trips(text, lsn):
    assert pgoutput.parse_lsn(text) == lsn and pgoutput.lsn_text(lsn) == text


@pytest.mark.parametrize("text", ["", "0", "0/", "/0", "g/0", "0/1/2", "123456789/0", None, 7])
def test_malformed_lsns_are_refused(text):
    with pytest.raises(ValueError):
        pgoutput.parse_lsn(text)
