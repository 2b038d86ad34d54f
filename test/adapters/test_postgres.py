import threading

import pytest

from totesys_etl.adapters import postgres as pg
from totesys_etl.config import Database
from totesys_etl.errors import ConfigurationError, SourceUnavailable, WarehouseUnavailable


def test_parse_url_decodes_and_refuses_other_schemes():
    assert pg.parse_url("postgresql://a%40b:p%3Aw@h:6543/d%20b") == {
        "user": "a@b", "password": "p:w", "host": "h", "port": 6543, "database": "d b", "ssl_context": None}
    with pytest.raises(ConfigurationError):
        pg.parse_url("mysql://u:p@h/db")


def test_a_malformed_url_is_a_configuration_error_without_the_password():
    with pytest.raises(ConfigurationError) as error:
        pg.parse_url("postgresql://reader:my/s3cretpw@db.example:5432/totesys")
    assert "s3cretpw" not in str(error.value) and "my" not in str(error.value).split("(")[0].split("//")[0]


def test_sslmode_chooses_a_cached_context():
    assert pg.parse_url("postgresql://u@h/d?sslmode=disable")["ssl_context"] is False
    required = pg.parse_url("postgresql://u@h/d?sslmode=require")["ssl_context"]
    assert required is pg.ssl_context("require") and not required.check_hostname
    assert pg.ssl_context("verify-full").check_hostname
    with pytest.raises(ConfigurationError):
        pg.ssl_context("sometimes")


def test_unreachable_and_refused_errors_never_show_the_password(postgres, source):
    with pytest.raises(SourceUnavailable) as refused:
        pg.connect(Database("source", source.reader_url.replace(postgres.reader_password, "Wr0ngPassw0rd"), "x"))
    assert "Wr0ngPassw0rd" not in str(refused.value) and "source database" in str(refused.value)
    closed = "postgresql://u:Sup3rSecret@127.0.0.1:9/db"
    with pytest.raises(WarehouseUnavailable) as unreachable:
        pg.connect(Database("warehouse", closed, "x"), timeout=2)
    assert "Sup3rSecret" not in str(unreachable.value) and "127.0.0.1:9" in str(unreachable.value)


def test_copy_round_trip_keeps_null_apart_from_empty(warehouse_url):
    conn = pg.connect(Database("warehouse", warehouse_url, "x"))
    conn.run("CREATE TABLE t (id int, s varchar)")
    chunks = [b'1,"a,""b"""\n', b'2,""\n3,\n', '4,"zoë 🎉\nline"\n'.encode()]
    assert pg.copy_in(conn, "t", ["id", "s"], chunks) == 4
    assert conn.run("SELECT id, s FROM t ORDER BY id") == [[1, 'a,"b"'], [2, ""], [3, None], [4, "zoë 🎉\nline"]]
    import io
    out = io.BytesIO()
    assert pg.copy_out(conn, "SELECT id, s FROM t ORDER BY id", out) == 4
    assert out.getvalue().decode() == 'id,s\n1,"a,""b"""\n2,""\n3,\n4,"zoë 🎉\nline"\n'
    conn.close()


def test_transaction_rolls_back_on_error(warehouse_url):
    conn = pg.connect(Database("warehouse", warehouse_url, "x"))
    conn.run("CREATE TABLE t (id int)")
    with pytest.raises(RuntimeError):
        with pg.transaction(conn):
            conn.run("INSERT INTO t VALUES (1)")
            raise RuntimeError("boom")
    with pg.transaction(conn, "REPEATABLE READ"):
        conn.run("INSERT INTO t VALUES (2)")
    assert conn.run("SELECT id FROM t") == [[2]]
    conn.close()


def test_advisory_lock_waits_then_gives_up(warehouse_url):
    holder = pg.connect(Database("warehouse", warehouse_url, "x"))
    waiter = pg.connect(Database("warehouse", warehouse_url, "x"))
    assert pg.advisory_lock(holder, 42, 1)
    assert not pg.advisory_lock(waiter, 42, 0.2)
    release = threading.Timer(0.3, lambda: holder.run("SELECT pg_advisory_unlock(42)"))
    release.start()
    assert pg.advisory_lock(waiter, 42, 5)
    release.join()
    holder.close()
    waiter.close()
