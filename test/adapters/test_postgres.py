import socket
import threading
import time

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


def _holder_has_lock(holder, key: int) -> bool:
    return holder.run("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                      "AND granted AND objid = :key", key=key)[0][0] == 1


def _wait_in_thread(conn, key: int, wait_seconds: float, join_seconds: float) -> tuple[bool, list, float]:
    """advisory_lock in a thread: (finished within join_seconds, [result], seconds it took)."""
    result = []
    started = time.monotonic()
    waiter = threading.Thread(target=lambda: result.append(pg.advisory_lock(conn, key, wait_seconds)))
    waiter.start()
    waiter.join(join_seconds)
    return not waiter.is_alive(), result, time.monotonic() - started


def test_a_lock_wait_of_0_defers_at_once_while_the_holder_still_holds(warehouse_url):
    """contract §5: 0 = defer at once, never wait. `lock_timeout = 0` means *wait forever* in PostgreSQL
    (the old code blocked here until the holder left; the thread's join timeout shows it)."""
    holder = pg.connect(Database("warehouse", warehouse_url, "x"))
    waiter = pg.connect(Database("warehouse", warehouse_url, "x"))
    try:
        assert pg.advisory_lock(holder, 43, 1)
        finished, result, _seconds = _wait_in_thread(waiter, 43, 0, join_seconds=10)
        assert finished and result == [False]
        assert _holder_has_lock(holder, 43)                     # it returned while the lock was still held
        assert waiter.run("SHOW lock_timeout") == [["0"]]       # and left the session as it found it
        holder.run("SELECT pg_advisory_unlock(43)")
        assert pg.advisory_lock(waiter, 43, 0)                  # a free lock is taken at once too
    finally:
        holder.close()                                          # frees a blocked waiter, should one block
        waiter.close()


def test_a_lock_wait_of_1_second_waits_that_long_then_defers(warehouse_url):
    holder = pg.connect(Database("warehouse", warehouse_url, "x"))
    waiter = pg.connect(Database("warehouse", warehouse_url, "x"))
    try:
        assert pg.advisory_lock(holder, 44, 0)
        finished, result, seconds = _wait_in_thread(waiter, 44, 1, join_seconds=30)
        assert finished and result == [False] and seconds >= 1.0
        assert _holder_has_lock(holder, 44)
    finally:
        holder.close()
        waiter.close()


def test_connections_carry_keepalives_and_timeouts(warehouse_url):
    conn = pg.connect(Database("warehouse", warehouse_url, "x"))
    try:
        shown = {name: conn.run(f"SHOW {name}")[0][0] for name in (
            "statement_timeout", "idle_in_transaction_session_timeout", "tcp_keepalives_idle",
            "tcp_keepalives_interval", "tcp_keepalives_count")}
        assert shown == {"statement_timeout": "15min", "idle_in_transaction_session_timeout": "5min",
                         "tcp_keepalives_idle": "60", "tcp_keepalives_interval": "15", "tcp_keepalives_count": "4"}
        sock = conn._usock                      # pg8000's socket: the one connect() opened
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle + interval * count <= 120                   # a dead peer is noticed within 2 minutes
    finally:
        conn.close()
    unbounded = pg.connect(Database("warehouse", warehouse_url, "x"), statement_timeout=None)
    try:                                                        # a local tool's bulk load may opt out
        assert unbounded.run("SHOW statement_timeout") == [["0"]]
        assert unbounded.run("SHOW idle_in_transaction_session_timeout") == [["5min"]]
    finally:
        unbounded.close()


def test_a_session_abandoned_mid_transaction_loses_its_lock(warehouse_url):
    """A loader that hangs (or dies behind a half-open socket) idle in its transaction is cut off by
    the server after idle_in_transaction_session_timeout, and its session lock goes with it."""
    abandoned = pg.connect(Database("warehouse", warehouse_url, "x"), idle_in_transaction_timeout=3)
    other = pg.connect(Database("warehouse", warehouse_url, "x"))
    try:
        assert pg.advisory_lock(abandoned, 45, 0)
        abandoned.run("START TRANSACTION")
        abandoned.run("SELECT 1")                               # then nothing: idle in transaction
        assert not pg.advisory_lock(other, 45, 0)
        assert pg.advisory_lock(other, 45, 15)                  # freed once the server ends that session
        with pytest.raises((pg.InterfaceError, pg.DatabaseError, OSError)):   # the session is gone
            abandoned.run("SELECT 1")
    finally:
        pg.close_quietly(abandoned)
        other.close()


# --- copy_out takes CopyData messages off the socket in bulk (issue 23) -------------------------------------
# Each test compares copy_out with pg8000's own COPY handling of the same query, byte for byte.

def _pg8000_copy(conn, query: str) -> bytes:
    import io
    out = io.BytesIO()
    conn.run(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)", stream=out)
    return out.getvalue()


def _bulk_copy(conn, query: str) -> tuple[int, bytes]:
    import io
    out = io.BytesIO()
    rows = pg.copy_out(conn, query, out)
    return rows, out.getvalue()


@pytest.fixture
def conn(warehouse_url):
    connection = pg.connect(Database("warehouse", warehouse_url, "x"))
    yield connection
    pg.close_quietly(connection)


@pytest.mark.parametrize("query, rows", [
    # many rows of every length from 1 to 400 bytes: messages cut at every point of the 8 KB buffer
    ("SELECT i, repeat(chr(65 + i % 26), i % 400) FROM generate_series(1, 30000) i", 30000),
    # rows far longer than the buffer, between short ones
    ("SELECT i, CASE WHEN i % 7 = 0 THEN repeat('é', 100000 + i) ELSE 'x' END FROM generate_series(1, 60) i", 60),
    ("SELECT 1 AS one WHERE false", 0),                            # the header alone
    ("SELECT 'a,\"b\"' AS s, NULL AS n, '' AS e, E'two\\nlines' AS t", 1),
])
def test_copy_out_writes_exactly_what_pg8000_would(conn, query, rows):
    assert _bulk_copy(conn, query) == (rows, _pg8000_copy(conn, query))


def test_an_error_in_the_middle_of_a_copy_is_the_statement_s_error_and_the_connection_lives_on(conn):
    query = "SELECT i, 1 / (i - 20000) FROM generate_series(1, 30000) i"   # fails after 19,999 rows are sent
    with pytest.raises(pg.DatabaseError) as error:
        _bulk_copy(conn, query)
    assert pg.sqlstate(error.value) == "22012"
    assert conn.run("SELECT 1") == [[1]]
    assert _bulk_copy(conn, "SELECT 2 AS two") == (1, b"two\n2\n")


def test_notices_sent_during_a_copy_reach_pg8000(conn):
    conn.run("CREATE FUNCTION noisy(i int) RETURNS int LANGUAGE plpgsql AS "
             "$$ BEGIN IF i % 5000 = 0 THEN RAISE NOTICE 'row %', i; END IF; RETURN i; END $$")
    query = "SELECT noisy(i) FROM generate_series(1, 20000) i"
    assert _bulk_copy(conn, query) == (20000, _pg8000_copy(conn, query)[:])
    assert [n[b"M"] for n in list(conn.notices)[-8:]].count(b"row 5000") == 2


def test_copy_out_leaves_pg8000_s_own_handling_in_place_for_other_statements(conn):
    before = dict(conn.message_types)
    _bulk_copy(conn, "SELECT 1 AS one")
    with pytest.raises(pg.DatabaseError):
        _bulk_copy(conn, "SELECT 1 / 0")
    assert conn.message_types == before
