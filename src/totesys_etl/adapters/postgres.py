"""PostgreSQL through pg8000: connecting without leaking credentials, transactions, COPY, locks.

Every connection sets TCP_NODELAY (without it each statement waits ~40-80 ms for delayed ACKs), and
is made so that a dead or hung client cannot hold a lock for hours (issue 21): TCP keepalives on
both ends notice a dead peer within ~2 minutes, `statement_timeout` ends a statement at Lambda's
own limit, and `idle_in_transaction_session_timeout` ends a session left in a transaction. The
server then ends the session, and with it every lock the session held (the loaders' advisory lock).
"""
from __future__ import annotations

import socket
import ssl
import struct
from contextlib import contextmanager
from typing import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from pg8000.native import DatabaseError, InterfaceError, identifier  # noqa: F401 (re-exported)

from totesys_etl.adapters.secrets import read_database_secret
from totesys_etl.config import Database
from totesys_etl.errors import ConfigurationError, SourceUnavailable, WarehouseUnavailable, describe

Connection = pg8000.native.Connection

_UNAVAILABLE = {"source": SourceUnavailable, "warehouse": WarehouseUnavailable}

#: A statement longer than a Lambda invocation may last (15 minutes) has no one left to read it.
STATEMENT_TIMEOUT_SECONDS = 15 * 60
#: A session idle inside a transaction this long is a hung or dead client: the server ends it.
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 5 * 60
#: TCP keepalive: first probe after KEEPALIVE_IDLE s of silence, then every KEEPALIVE_INTERVAL s;
#: KEEPALIVE_COUNT unanswered probes end the connection: a dead peer is noticed within 2 minutes.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 15, 4


def parse_url(url: str) -> dict:
    """`postgresql://user:password@host:port/dbname[?sslmode=…]` as connection keywords."""
    shape = "a database URL must look like postgresql://user:password@host:port/dbname"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port, e.g. an unescaped '/' in the password
    except ValueError:
        raise ConfigurationError(f"{shape} (percent-encode special characters)") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
        raise ConfigurationError(shape)
    query = parse_qs(parts.query)
    sslmode, rootcert = query.get("sslmode", [None])[0], query.get("sslrootcert", [None])[0]
    return {"user": unquote(parts.username or ""), "password": unquote(parts.password or "") or None,
            "host": parts.hostname, "port": port or 5432, "database": unquote(parts.path.lstrip("/")),
            "ssl_context": ssl_context(sslmode, rootcert)}


#: The RDS CA bundle `make package` puts in the function zip (.ci/package.py, RDS_CA_BUNDLE):
#: Lambda's system store lacks the RDS CAs, and nothing is downloaded at run time.
CA_BUNDLE = Path(__file__).resolve().parents[1] / "certs" / "rds-ca-bundle.pem"


@lru_cache(maxsize=None)
def _verified_context(check_hostname: bool, cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if cafile:
        try:
            context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as e:
            raise ConfigurationError(f"sslrootcert {cafile!r} cannot be read as PEM CA certificates ({e})") from None
    context.check_hostname = check_hostname
    return context


@lru_cache(maxsize=None)
def _encrypted_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ssl_context(sslmode: str | None, rootcert: str | None = None):
    """pg8000's `ssl_context` for a libpq-style `sslmode`.

    Unset keeps pg8000's default (SSL if the server offers it, unverified). `disable` skips the
    ~50 ms of building a context on every connection (local servers have no SSL); `require`
    insists on encryption; `verify-ca` also checks the certificate, `verify-full` the host name
    too, against the system's CAs and `rootcert` (libpq's sslrootcert), by default the packaged
    CA_BUNDLE when there is one. Contexts are built once per process.
    """
    if sslmode in (None, "", "prefer", "allow"):
        return None
    if sslmode == "disable":
        return False
    if sslmode == "require":
        return _encrypted_context()
    if sslmode in ("verify-ca", "verify-full"):
        if rootcert is None and CA_BUNDLE.is_file():
            rootcert = str(CA_BUNDLE)
        return _verified_context(sslmode == "verify-full", rootcert)
    raise ConfigurationError(f"unknown sslmode {sslmode!r}")


def credentials(database: Database) -> dict:
    """Connection keywords from the URL, else from the database's Secrets Manager secret."""
    if database.url:
        return parse_url(database.url)
    secret = read_database_secret(database.secret_id)
    return {"user": secret["username"], "password": secret["password"], "host": secret["host"],
            "port": int(secret["port"]), "database": secret["dbname"],
            "ssl_context": ssl_context(secret.get("sslmode"), secret.get("sslrootcert"))}


def connect(database: Database, timeout: float = 10.0, application_name: str = "totesys-etl",
            statement_timeout: float | None = STATEMENT_TIMEOUT_SECONDS,
            idle_in_transaction_timeout: float | None = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS) -> Connection:
    """An open connection, or SourceUnavailable / WarehouseUnavailable naming host and database.

    The timeouts (seconds; None leaves the server's setting, for a local tool's long bulk load)
    and the server's keepalives are set in the startup packet (no extra round trip); the client's
    keepalives on the socket. The reason never carries the password or the URL.
    """
    kwargs = credentials(database)
    where = f"{database.name} database {kwargs['database']!r} at {kwargs['host']}:{kwargs['port']}"
    error = _UNAVAILABLE.get(database.name, WarehouseUnavailable)
    settings = {"tcp_keepalives_idle": str(KEEPALIVE_IDLE), "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
                "tcp_keepalives_count": str(KEEPALIVE_COUNT)}
    for name, seconds in (("statement_timeout", statement_timeout),
                          ("idle_in_transaction_session_timeout", idle_in_transaction_timeout)):
        if seconds is not None:
            settings[name] = _milliseconds(seconds)
    sock = None
    try:
        sock = socket.create_connection((kwargs["host"], kwargs["port"]), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _keep_alive(sock)
        conn = pg8000.native.Connection(sock=sock, timeout=None, application_name=application_name,
                                        startup_params=settings,
                                        **{k: v for k, v in kwargs.items() if k not in ("port",)})
        sock.settimeout(None)
        return conn
    except (OSError, InterfaceError, DatabaseError) as e:
        if sock is not None:
            sock.close()
        raise error(f"{where} is unavailable: {_reason(e, kwargs.get('password'))}") from None


def _milliseconds(seconds: float) -> str:
    """A timeout setting's value; at least 1 ms, since 0 means "no timeout" to PostgreSQL."""
    return str(max(1, round(seconds * 1000)))


def _keep_alive(sock: socket.socket) -> None:
    """Client-side keepalives, so a silent dead server (a half-open connection) fails the client too.

    TCP_USER_TIMEOUT also bounds how long sent data may stay unacknowledged. The per-socket knobs
    are Linux's (Lambda's); elsewhere only SO_KEEPALIVE is set.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", KEEPALIVE_COUNT),
                          ("TCP_USER_TIMEOUT", (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _reason(error: Exception, password: str | None) -> str:
    """A one-line reason from a driver error, with the password cut out should it appear."""
    text = describe(error)
    return text.replace(password, "***") if password else text


def close_quietly(conn: Connection) -> None:
    """Close a session; a connection already lost must not hide the error that lost it."""
    try:
        conn.close()
    except (InterfaceError, OSError):
        pass


def table_columns(conn: Connection, tables: list[str]) -> dict[str, set[str]]:
    """The columns each of `tables` has in the `public` schema now (a table that is gone has none),
    to tell a dropped or renamed column from an outage. Any role may read the catalogs."""
    found: dict[str, set[str]] = {}
    for table, column in conn.run(
            "SELECT c.relname, a.attname FROM pg_catalog.pg_class AS c"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = 'public'"
            " JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " WHERE c.relname = ANY(CAST(:tables AS text[])) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            tables=tables):
        found.setdefault(table, set()).add(column)
    return found


def rollback_quietly(conn: Connection) -> None:
    """End a failed transaction; a connection already lost must not hide the error that ended it."""
    try:
        conn.run("ROLLBACK")
    except Exception:  # nosec B110 - the connection may be gone; the original error matters
        pass


@contextmanager
def transaction(conn: Connection, isolation: str = "READ COMMITTED", read_only: bool = False
                ) -> Iterator[Connection]:
    """BEGIN … COMMIT, or ROLLBACK on any exception (a unit of work commits only on success)."""
    if isolation not in ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"):
        raise ValueError(isolation)
    conn.run(f"START TRANSACTION ISOLATION LEVEL {isolation}{' READ ONLY' if read_only else ''}")
    try:
        yield conn
    except BaseException:
        rollback_quietly(conn)
        raise
    conn.run("COMMIT")


def copy_in(conn: Connection, table: str, columns: Iterable[str], chunks: Iterable[bytes], binary: bool = False
            ) -> int:
    """COPY CSV (header-less, pyarrow's quoting), or with `binary` PostgreSQL's binary COPY format,
    into `table` from an iterable of byte chunks.

    pg8000 sends each chunk as one CopyData message, so memory holds one chunk at a time.

    In CSV, unquoted empty fields are NULL and `""` is the empty string, so NULL and '' stay apart.
    """
    cols = ", ".join(identifier(c) for c in columns)
    conn.run(f"COPY {identifier(table)} ({cols}) FROM STDIN WITH (FORMAT {'binary' if binary else 'csv'})",
             stream=iter(chunks))
    return conn.row_count


def copy_out(conn: Connection, query: str, stream, **params) -> int:
    """COPY (query) TO a binary file-like object as CSV with a header; returns the row count.

    The rows are taken off the socket in bulk (`_bulk_copy_data`): pg8000 on its own handles
    each row's CopyData message one at a time in Python, which was most of an ingest's time. This
    uses pg8000's internals (a connection's `message_types`, `_sock`, and without parameters
    `execute_unnamed` and `_context`), which is one more reason requirements.txt pins pg8000;
    test/adapters/test_postgres.py compares the result byte for byte with pg8000's own handling,
    so an upgrade that changes them fails there.
    """
    original = conn.message_types[_COPY_OUT_RESPONSE]

    def copy_out_response(data: bytes, context) -> None:
        original(data, context)  # pg8000's own checks, and its writer for the stream
        _bulk_copy_data(conn._sock, context.stream_write)

    conn.message_types[_COPY_OUT_RESPONSE] = copy_out_response
    statement = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)"
    try:
        if params:
            conn.run(statement, stream=stream, **params)
        else:
            # pg8000's run() reads the text a character at a time in Python for `:name` parameters
            # (about 2 s for the 1.3 MB an ingest statement holds after 100,000 interleaved
            # savepoints); without parameters the text is the statement as it stands.
            conn._context = conn.execute_unnamed(statement, stream=stream)
    finally:
        conn.message_types[_COPY_OUT_RESPONSE] = original
    return conn.row_count


#: The protocol's message types (https://www.postgresql.org/docs/current/protocol-message-formats.html).
_COPY_OUT_RESPONSE, _COPY_DATA = b"H", ord("d")
#: Bytes looked at per pass over the socket's read buffer (pg8000's is 8 KB; peek gives at most that).
_PEEK_BYTES = 1 << 16
_length = struct.Struct("!i").unpack_from


def _bulk_copy_data(sock, write) -> None:
    """Write the payloads of the CopyData messages at the head of `sock` (pg8000's buffered socket).

    Each pass peeks at the buffered bytes, takes every whole CopyData message in them, writes
    their payloads at once and only then consumes those bytes. It stops, consuming nothing more,
    at the first message of another type (CopyDone, an error, a notice), so pg8000's own loop
    handles the rest of the exchange exactly as it would have. A CopyData message that is not
    wholly buffered (a row longer than the buffer, or cut at its end) is read on its own.
    """
    try:
        _take_copy_data(sock, write)
    except OSError as e:
        raise InterfaceError("network error") from e


def _take_copy_data(sock, write) -> None:
    while True:
        buffered = sock.peek(_PEEK_BYTES)
        if not buffered:
            raise InterfaceError("network error")  # the server closed the connection mid-COPY
        if buffered[0] != _COPY_DATA:
            return
        end, taken, payloads = len(buffered), 0, []
        while end - taken >= 5 and buffered[taken] == _COPY_DATA:
            after = taken + 1 + _length(buffered, taken + 1)[0]
            if after > end:
                break
            payloads.append(buffered[taken + 5:after])
            taken = after
        if taken:
            write(b"".join(payloads))
            sock.read(taken)
        else:  # one CopyData message not wholly in the buffer
            size = int.from_bytes(_read_exactly(sock, 5)[1:], "big")
            write(_read_exactly(sock, size - 4))


def _read_exactly(sock, size: int) -> bytes:
    data = sock.read(size)
    if len(data) != size:
        raise InterfaceError("network error")
    return data


def sqlstate(error: BaseException) -> str:
    """The SQLSTATE of a server error (pg8000 puts the server's fields in `args[0]`); '' if none."""
    fields = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    return fields.get("C", "")


#: SQLSTATE classes that mean "these rows are bad" (22 data exception, 23 integrity constraint
#: violation), not a fault of the server or the connection.
BAD_DATA_CLASSES = ("22", "23")


def is_bad_data(error: BaseException) -> bool:
    """Whether PostgreSQL refused the rows themselves (`BAD_DATA_CLASSES`)."""
    return sqlstate(error).startswith(BAD_DATA_CLASSES)


def advisory_lock(conn: Connection, key: int, wait_seconds: float) -> bool:
    """Take a session advisory lock, waiting up to `wait_seconds`; False if the wait expired.

    A wait of 0 (or less) never waits: `pg_try_advisory_lock`, since `lock_timeout = 0` would mean
    "wait forever" to PostgreSQL. The lock dies with the session, so a crashed holder never blocks a rerun.
    """
    if wait_seconds <= 0:
        return bool(conn.run("SELECT pg_try_advisory_lock(:key)", key=key)[0][0])
    conn.run(f"SET lock_timeout = {_milliseconds(wait_seconds)}")
    try:
        conn.run("SELECT pg_advisory_lock(:key)", key=key)
        return True
    except DatabaseError as e:
        if sqlstate(e) == "55P03":  # lock_not_available
            return False
        raise
    finally:
        conn.run("SET lock_timeout = 0")
