"""A run's committed transactions folded into what the lake receives: per table, the newest
version of each changed row, or the fact that it was deleted (pure: no I/O).

- **Commit order.** Transactions are applied in the order the slot gives them (commit LSN order),
  so the version kept is the one committed last, whatever its `last_updated` says (stamps are
  data only). A run never holds two versions of one row (contract §3).
- **Deletes.** A delete drops the row's pending version and records the id with its commit time;
  a later insert of the same id in the run makes it current again (and forgets the delete).
- **Unchanged TOASTed values** (`pgoutput.UNCHANGED_TOAST`) are taken from the row's previous
  version: under REPLICA IDENTITY FULL (what `up` and the DBA steps set) the update's old tuple
  carries it; otherwise the version this run already holds for the row. With neither, the run
  stops (UnchangedValueMissing) rather than ship a placeholder or guess from the table's current
  state, which may be newer than this version.
- **Shape.** A relation message maps the source's columns to the declaration by name: a new
  column is ignored. A declared column that is missing stops that table alone (contract §2): the
  first change of it that would ship with that shape puts it in `stopped`, and what the run held of
  it is dropped, since a stopped table catches up with a whole copy (run.py). A table in `stopped`
  or in `skip` (its changes in the current transaction are in a copy already) is passed over.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from totesys_etl.errors import EtlError
from totesys_etl.ingest.cdc.pgoutput import UNCHANGED_TOAST, Delete, Insert, Relation, Truncate, Update
from totesys_etl.schema.model import Table


class UnchangedValueMissing(EtlError):
    """An update left a TOASTed value out and nothing holds the row's previous value."""

    error_kind = "cdc_unchanged_value"


class TruncateSeen(EtlError):
    """A TRUNCATE of a table the pipeline reads (contract §2: rows are never deleted in bulk)."""

    error_kind = "cdc_truncate"


@dataclass
class TableChanges:
    """One table's part of a run: `versions` (key text -> row in declared column order) and
    `deleted` (key text -> commit time of the delete)."""

    table: Table
    versions: dict[str, tuple] = field(default_factory=dict)
    deleted: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class _Shape:
    table: Table
    positions: tuple[int, ...]  # for each declared column, its position in the source's tuple
    key_position: int
    missing: tuple[str, ...] = ()  # declared columns the source's tuple lacks: the table stops


class Fold:
    """Apply relation and row messages of committed transactions, in commit order."""

    def __init__(self, tables: tuple[Table, ...], stopped: dict[str, tuple[str, ...]] | None = None):
        self.tables = {t.name: t for t in tables}
        self.changes: dict[str, TableChanges] = {t.name: TableChanges(t) for t in tables}
        self._shapes: dict[int, _Shape | None] = {}
        self.rows = 0  # row messages applied (the run's size, for its bound)
        #: table -> the declared columns it lacks: not shipped by this run (contract §2)
        self.stopped: dict[str, tuple[str, ...]] = dict(stopped or {})
        #: tables whose changes in the transaction being applied are in a copy already (run.py sets it)
        self.skip: frozenset[str] = frozenset()

    def relation(self, message: Relation) -> None:
        """Remember how relation `relation_id` maps onto its declaration (None: not read)."""
        table = self.tables.get(message.name) if message.namespace == "public" else None
        if table is None:
            self._shapes[message.relation_id] = None
            return
        names = message.column_names
        missing = tuple(c for c in table.column_names if c not in names)
        if missing:  # only a change that would ship with this shape stops the table
            self._shapes[message.relation_id] = _Shape(table, (), -1, missing)
            return
        positions = tuple(names.index(c) for c in table.column_names)
        self._shapes[message.relation_id] = _Shape(table, positions, names.index(table.key[0]))

    def _shape(self, relation_id: int) -> _Shape | None:
        if relation_id not in self._shapes:  # pgoutput sends a relation before its first change
            raise ValueError(f"a change of relation {relation_id} came before its relation message")
        return self._shapes[relation_id]

    def change(self, message: Insert | Update | Delete | Truncate, committed_at: datetime) -> None:
        if isinstance(message, Truncate):
            names = [s.table.name for r in message.relation_ids
                     if (s := self._shape(r)) is not None and not self._passed_over(s.table.name)]
            if names:
                raise TruncateSeen(f"TRUNCATE of {', '.join(names)}: the source's rows are never deleted in bulk; "
                                   "take a full snapshot (readme_files/cdc.md, recovery)")
            return
        shape = self._shape(message.relation_id)
        if shape is None:
            return
        self.rows += 1
        if shape.table.name in self.skip:  # a copy holds it already, whatever shape it had
            return
        if shape.missing and shape.table.name not in self.stopped:
            self.stopped[shape.table.name] = shape.missing
            self.changes[shape.table.name] = TableChanges(shape.table)  # the copy that resumes it holds them
        if shape.table.name in self.stopped:
            return
        changes = self.changes[shape.table.name]
        if isinstance(message, Delete):
            key = message.old[shape.key_position]
            changes.versions.pop(key, None)
            changes.deleted[key] = committed_at
            return
        new = message.new
        key = new[shape.key_position]
        if isinstance(message, Update) and message.old_kind == "K" and message.old is not None:
            old_key = message.old[shape.key_position]  # the key itself changed: the old id is gone
            if old_key is not None and old_key != key:
                changes.versions.pop(old_key, None)
                changes.deleted[old_key] = committed_at
        row = tuple(new[p] for p in shape.positions)
        if UNCHANGED_TOAST in row:
            row = self._filled(shape, row, message, changes.versions.get(key))
        changes.versions[key] = row
        changes.deleted.pop(key, None)

    def _passed_over(self, table: str) -> bool:
        return table in self.stopped or table in self.skip

    def _filled(self, shape: _Shape, row: tuple, message, previous: tuple | None) -> tuple:
        old = message.old if isinstance(message, Update) and message.old_kind == "O" else None
        filled = []
        for i, value in enumerate(row):
            if value is UNCHANGED_TOAST:
                if old is not None and old[shape.positions[i]] is not UNCHANGED_TOAST:
                    value = old[shape.positions[i]]
                elif previous is not None:
                    value = previous[i]
                else:
                    names = shape.table.column_names
                    raise UnchangedValueMissing(
                        f"a change to {shape.table.name} id {row[names.index(shape.table.key[0])]} left {names[i]} "
                        f"(a TOASTed value) out and nothing holds its previous value: give {shape.table.name} "
                        "REPLICA IDENTITY FULL (readme_files/cdc.md)")
            filled.append(value)
        return tuple(filled)
