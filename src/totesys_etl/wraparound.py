"""Proving a version shipped twice to be a frozen row re-read after a wraparound (ADR 0001, "Frozen
rows older than 2^32 ids"), for `reconcile`.

`history.py` finds versions several runs shipped with the same row (`Shipped.alike`); the lake's
CSVs do not carry `xmin`, so this checks them against the source: it rebuilds from each run's
manifest the plan that run read by and, from it, which writer ids and stamps it read (`_RunReads`:
`extract.ReadCondition`, the same rule the ingest's `changes_query` renders as SQL), and asks
whether the row's raw `xmin`, made 64-bit as each run made it, is one of them, at a later position
for each copy.
"""
from __future__ import annotations

from collections.abc import Collection
from itertools import pairwise

from pg8000.native import identifier

from totesys_etl import manifest as manifests
from totesys_etl.adapters.postgres import Connection
from totesys_etl.errors import InvalidInput, LakeUnavailable
from totesys_etl.history import Shipped
from totesys_etl.ingest import xid_state
from totesys_etl.ingest.extract import Plan, ReadCondition
from totesys_etl.ingest.watermark import Watermark
from totesys_etl.ingest.xids import xid8_of_raw
from totesys_etl.schema import Table, source_table


def explain_wraparound(source: Connection, ingest_bucket: str, shipped: dict[str, Shipped],
                       unreadable: Collection[str] = ()) -> None:
    """Move from `reshipped` to `wrapped` each version of `alike` that is a frozen row re-read after a
    wraparound (ADR 0001): the source still holds the row, the same values, and its raw `xmin`, made
    64-bit as each run that shipped a copy made it (`xid8_of_raw` against the run's snapshot), is an
    id that run read (`_RunReads`), at a later position for each copy than for the one before (the
    same raw id, a multiple of 2^32 further on). A version whose row has changed since cannot be
    proved so: it stays a reship.

    Reads the source in a read-only transaction of its own, one statement per table with such versions;
    none of a table in `unreadable` (one that lacks a declared column now: nothing of it is explained)."""
    runs = _RunReads(ingest_bucket)
    for table, found in sorted(shipped.items()):
        if not found.alike or table in unreadable:
            continue
        now = _source_rows(source, source_table(table), sorted({i for i, _ in found.alike}))
        wrapped = set()
        for version, (row, copies) in found.alike.items():
            raw, values = now.get(version[0], (None, None))
            reads = [runs.read(run_id, table) for run_id in copies]
            if values != row or None in reads:
                continue
            positions = [xid8_of_raw(raw, read.xmax) for read in reads]
            if all(a < b for a, b in pairwise(positions)) and all(
                    read.has(x, version[1]) for read, x in zip(reads, positions)):
                wrapped.add(version)
        found.wrapped = [(v, r) for v, r in found.reshipped if v in wrapped]
        found.reshipped = [(v, r) for v, r in found.reshipped if v not in wrapped]


def _source_rows(source: Connection, table: Table, ids: list[int]) -> dict[int, tuple[int, tuple]]:
    """id -> (its row's raw `xmin`, its values as the ingest's COPY writes them)."""
    key = identifier(f"{table.name}_id")
    # concat() prints a value with its type's output function, as COPY does (a boolean is 't', not 'true').
    values = ", ".join(f"CASE WHEN {identifier(c)} IS NULL THEN NULL ELSE concat({identifier(c)}) END"
                       for c in table.column_names)
    source.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        found = source.run(f"SELECT {key}, xmin::text::bigint, {values} "  # nosec B608 - declared names
                           f"FROM public.{identifier(table.name)} WHERE {key} = ANY(CAST(:ids AS int[]))", ids=ids)
    finally:
        source.run("ROLLBACK")  # it only read; ends an aborted transaction too
    return {r[0]: (r[1], tuple(r[2:])) for r in found}


class _RunReads:
    """Which versions of each table each ingest run read: the plan it read by, rebuilt from its manifest
    and its previous run's (each read once), and that plan's `extract.ReadCondition`."""

    def __init__(self, bucket: str):
        self.bucket = bucket
        self.manifests: dict[str, tuple[str, str | None, Watermark] | None] = {}
        self.reads: dict[tuple[str, str], ReadCondition | None] = {}

    def _run(self, run_id: str) -> tuple[str, str | None, Watermark] | None:
        """(how it read, its previous run, its watermark); None if its manifest holds none (a CDC run's,
        a corrupt one, one whose id sets cannot be read): nothing it shipped is then explained."""
        if run_id not in self.manifests:
            try:
                manifest = xid_state.inline(self.bucket, manifests.read(self.bucket, run_id, manifests.INGEST_FIELDS))
                self.manifests[run_id] = (manifest.get("read"), manifest.get("previous_run_id"),
                                          Watermark.from_manifest(manifest))
            except (InvalidInput, LakeUnavailable):
                self.manifests[run_id] = None
        return self.manifests[run_id]

    def read(self, run_id: str, table: str) -> ReadCondition | None:
        if (run_id, table) not in self.reads:
            self.reads[run_id, table] = self._read(run_id, table)
        return self.reads[run_id, table]

    def _read(self, run_id: str, table: str) -> ReadCondition | None:
        mode, previous_id, run = self._run(run_id) or (None, None, None)
        if run is None:
            return None
        previous = None
        if mode != "first" and previous_id is not None:
            found = self._run(previous_id)
            if found is None:
                return None
            previous = found[2]
            stopped = {s.table: s for s in previous.stopped}.get(table)
            if stopped is not None:  # the table resumed in this run: read from where it stopped
                previous, mode = stopped.since, "rescan" if stopped.since else "first"
        return Plan(previous, run.snapshot, mode if previous is not None else "first", run.in_progress).condition
