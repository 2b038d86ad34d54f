"""A decoder of PostgreSQL's `pgoutput` logical replication messages, protocol version 1.

The format is PostgreSQL's "Logical Replication Message Formats" (protocol-logicalrep-message-
formats in the manual): one message per row that `pg_logical_slot_peek_binary_changes` returns,
network byte order, strings NUL-terminated. Version 1 (no streaming of in-progress transactions,
no two-phase) is what the SQL interface gives, since a SQL caller can only read whole committed
transactions. Column values arrive as the types' text output (the `binary` option is never
asked for), the same text `COPY ... (FORMAT csv)` writes, so a CDC run's CSV reads exactly like a
polled one.

No library was taken for this: psycopg2's replication support is a streaming client (it holds a
walsender connection, which a scheduled Lambda cannot), psycopg 3 has none, and the pgoutput
decoders on PyPI are single releases from 2022 or pull in psycopg2 and pydantic. The messages
this ingest needs fit in the page below; `test/ingest/test_cdc_pgoutput.py` holds it to what
PostgreSQL 15 itself writes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

#: PostgreSQL's epoch for timestamps on the wire (microseconds since then).
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


class _Unchanged:
    """The value of a TOASTed column that an UPDATE left alone: pgoutput sends no value for it
    (kind `u`). It must be filled from the row's previous version (fold.py), never shipped."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST = _Unchanged()

#: A column's value: its text output, None for NULL, or UNCHANGED_TOAST.
Value = "str | None | _Unchanged"


class DecodeError(ValueError):
    """Bytes that are not a pgoutput version 1 message this decoder knows."""


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    committed_at: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int  # where the commit record starts
    end_lsn: int  # where it ends: a slot advanced to here has consumed the transaction
    committed_at: datetime


@dataclass(frozen=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True)
class RelationColumn:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    """A table's shape as of this point of the WAL: sent before its first change in a session,
    and again after every change of its definition (a dropped column shows here first)."""

    relation_id: int
    namespace: str
    name: str
    replica_identity: str  # d default, n nothing, f full, i index
    columns: tuple[RelationColumn, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class TypeInfo:
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True)
class Insert:
    relation_id: int
    new: tuple


@dataclass(frozen=True)
class Update:
    """`old` is the whole previous row under REPLICA IDENTITY FULL (`old_kind` "O"), its key when
    the key changed ("K"), else None."""

    relation_id: int
    old: tuple | None
    old_kind: str | None
    new: tuple


@dataclass(frozen=True)
class Delete:
    relation_id: int
    old: tuple
    old_kind: str


@dataclass(frozen=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = "Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate | LogicalMessage"


class _Reader:
    __slots__ = ("data", "at")

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        end = self.at + size
        if end > len(self.data):
            raise DecodeError(f"message ends at byte {len(self.data)}, {end} needed")
        chunk = self.data[self.at:end]
        self.at = end
        return chunk

    def int8(self) -> int:
        return self.take(1)[0]

    def int16(self) -> int:
        return struct.unpack("!h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack("!i", self.take(4))[0]

    def uint32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def int64(self) -> int:
        return struct.unpack("!q", self.take(8))[0]

    def lsn(self) -> int:
        return struct.unpack("!Q", self.take(8))[0]

    def timestamp(self) -> datetime:
        return _PG_EPOCH + timedelta(microseconds=self.int64())

    def string(self) -> str:
        end = self.data.find(b"\x00", self.at)
        if end < 0:
            raise DecodeError("a string has no terminating NUL")
        text = self.data[self.at:end].decode("utf-8")
        self.at = end + 1
        return text

    def tuple_data(self) -> tuple:
        values = []
        for _ in range(self.int16()):
            kind = self.take(1)
            if kind == b"t":
                values.append(self.take(self.int32()).decode("utf-8"))
            elif kind == b"n":
                values.append(None)
            elif kind == b"u":
                values.append(UNCHANGED_TOAST)
            else:  # b"b" only comes with the `binary` option, which this ingest never sets
                raise DecodeError(f"unknown column kind {kind!r}")
        return tuple(values)

    def done(self) -> None:
        if self.at != len(self.data):
            raise DecodeError(f"{len(self.data) - self.at} bytes left after the message")


def _relation(r: _Reader) -> Relation:
    relation_id, namespace, name = r.uint32(), r.string(), r.string()
    identity = chr(r.int8())
    columns = []
    for _ in range(r.int16()):
        flags = r.int8()
        columns.append(RelationColumn(r.string(), r.uint32(), r.int32(), bool(flags & 1)))
    return Relation(relation_id, namespace, name, identity, tuple(columns))


def _update(r: _Reader) -> Update:
    relation_id = r.uint32()
    kind = chr(r.int8())
    old = None
    old_kind = None
    if kind in ("K", "O"):
        old, old_kind = r.tuple_data(), kind
        kind = chr(r.int8())
    if kind != "N":
        raise DecodeError(f"an update's new tuple is marked {kind!r}, not 'N'")
    return Update(relation_id, old, old_kind, r.tuple_data())


def _delete(r: _Reader) -> Delete:
    relation_id = r.uint32()
    kind = chr(r.int8())
    if kind not in ("K", "O"):
        raise DecodeError(f"a delete's old tuple is marked {kind!r}")
    return Delete(relation_id, r.tuple_data(), kind)


def _insert(r: _Reader) -> Insert:
    relation_id = r.uint32()
    if r.take(1) != b"N":
        raise DecodeError("an insert's tuple is not marked 'N'")
    return Insert(relation_id, r.tuple_data())


def _truncate(r: _Reader) -> Truncate:
    count, options = r.int32(), r.int8()
    return Truncate(tuple(r.uint32() for _ in range(count)), bool(options & 1), bool(options & 2))


def _commit(r: _Reader) -> Commit:
    r.int8()  # flags: none are defined
    return Commit(r.lsn(), r.lsn(), r.timestamp())


def _message(r: _Reader) -> LogicalMessage:
    flags, lsn, prefix = r.int8(), r.lsn(), r.string()
    return LogicalMessage(bool(flags & 1), lsn, prefix, r.take(r.int32()))


_DECODERS = {
    b"B": lambda r: Begin(r.lsn(), r.timestamp(), r.uint32()),
    b"C": _commit,
    b"O": lambda r: Origin(r.lsn(), r.string()),
    b"R": _relation,
    b"Y": lambda r: TypeInfo(r.uint32(), r.string(), r.string()),
    b"I": _insert,
    b"U": _update,
    b"D": _delete,
    b"T": _truncate,
    b"M": _message,
}


def decode(data: bytes) -> Message:
    """One message from its bytes; DecodeError for anything else (never a partial message)."""
    data = bytes(data)
    if not data:
        raise DecodeError("an empty message")
    decoder = _DECODERS.get(data[:1])
    if decoder is None:
        raise DecodeError(f"unknown message type {data[:1]!r}")
    reader = _Reader(data)
    reader.at = 1
    try:
        message = decoder(reader)
    except UnicodeDecodeError as e:
        raise DecodeError(f"text that is not UTF-8: {e}") from None
    reader.done()
    return message


def lsn_text(lsn: int) -> str:
    """PostgreSQL's text form of an LSN, `X/X` (hex), as `pg_lsn` reads it back."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text) -> int:
    """An LSN from its `X/X` text; ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError("an LSN is text 'X/X'")
    high, sep, low = text.partition("/")
    if not sep or not (1 <= len(high) <= 8 and 1 <= len(low) <= 8):
        raise ValueError(f"not an LSN: {text[:40]!r}")
    try:
        return int(high, 16) << 32 | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text[:40]!r}") from None
