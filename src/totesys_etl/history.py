"""Fact history against the lake: every version a run shipped is in the warehouse exactly once.

`reconcile` compares each fact's *current* version with the source; a lost *older* version would
pass that. The ingested CSVs are the record of every version the source showed to a run, so this
reads their version keys (`<source>_id`, `last_updated`: two columns, with pyarrow) from every run
a readable manifest names, leaves out the rows and files the processor held back (the processed
manifests list them), and compares the result with the fact table's version keys.

The same reading finds a version *shipped* twice (issue 34 item 12), which the warehouse cannot
show, since the loader stores a version once whatever reaches it: a version key that more than one
run carried. Two commits with the same stamp are one version whose later values win (contract §3),
so the later run had to ship it again: only a copy whose whole row is the same as the copy the run
before it shipped (NULL and '' apart) is a reship; x, y, x over three runs is three commits. Rows
are compared only for the version keys seen twice, so a clean lake costs nothing more.

One reship is the bound, not a fault (ADR 0001, "Frozen rows older than 2^32 ids"): a frozen row
whose raw `xmin` comes round again as an id handed out since the previous run is read once more.
The lake's CSVs do not carry `xmin`, so `wraparound.explain_wraparound` proves it against the source, for
versions whose every copy is the same row with no other version of the id between them (`alike`):
the source still holds that row, and its raw `xmin`, made 64-bit as each run that shipped it made
it, is an id that run read, each copy at a later position than the one before (the same raw id,
2^32 ids or more further on). Anything else shipped twice stays a reship.
"""
from __future__ import annotations

import os
from pathlib import Path
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from botocore.exceptions import ClientError
from pg8000.native import identifier

from totesys_etl import lake, quarantine
from totesys_etl import manifest as manifests
from totesys_etl.adapters import s3
from totesys_etl.adapters.postgres import Connection
from totesys_etl.errors import InvalidInput, is_missing
from totesys_etl.process import read
from totesys_etl.schema import FACTS, Table, source_table

Version = tuple[int, datetime]
#: A version and the runs that shipped the same row of it, in run order.
Reship = tuple[Version, list[str]]


@dataclass
class History:
    """One fact's versions: shipped by some run (minus those held back) against those stored."""

    fact: str
    shipped: int = 0
    lost: list[Version] = field(default_factory=list)        # shipped, not stored
    twice: list[Version] = field(default_factory=list)       # stored more than once
    unshipped: list[Version] = field(default_factory=list)   # stored, never shipped by a run
    reshipped: list[Reship] = field(default_factory=list)    # the same row shipped by several runs

    @property
    def ok(self) -> bool:
        return not (self.lost or self.twice or self.unshipped or self.reshipped)


@dataclass
class Shipped:
    """One source table in the lake: the versions that runs shipped and the processor let through,
    and the versions whose same row more than one run shipped (each with those runs, in order)."""

    versions: set[Version] = field(default_factory=set)
    reshipped: list[Reship] = field(default_factory=list)
    #: Versions read again only by runs that read everything on purpose (`FULL_READS`), and those runs.
    reread: int = 0
    reread_by: set[str] = field(default_factory=set)
    #: Reshipped versions whose every copy is the same row, no other version of the id shipped between
    #: them: the row and the runs. What a re-read after a wraparound looks like in the lake.
    alike: dict[Version, tuple[tuple, list[str]]] = field(default_factory=dict)
    #: Those `explain_wraparound` proved re-read after a wraparound (moved out of `reshipped`).
    wrapped: list[Reship] = field(default_factory=list)


#: How a run that read every row on purpose says so in its manifest (`read`): the poll ingest's first
#: read, which it also does after a restore, a failover or an unreadable previous manifest, and the CDC
#: ingest's snapshot (its first run, after a lost slot, after polling). Versions such a run carries
#: again are announced (a WARNING named why) and stored once downstream: a note, not a reship. A run
#: that read only some tables whole on purpose lists them `complete` (the CDC copy that resumes a table
#: stopped for a missing column): the same holds for those tables.
FULL_READS = frozenset({"first", "snapshot"})


def check_history(warehouse: Connection, ingest_bucket: str, processed_bucket: str,
                  facts: tuple[Table, ...] = FACTS, shipped: dict[str, Shipped] | None = None) -> list[History]:
    """Each fact's history against the versions the lake's runs shipped (`shipped`, if the caller
    has read the lake already with `shipped_versions`)."""
    if shipped is None:
        shipped = shipped_versions(ingest_bucket, processed_bucket, {f.source for f in facts})
    results = []
    for fact in facts:
        source_id, date, time = (identifier(c) for c in fact.version_key)
        rows = warehouse.run(f"SELECT {source_id}, {date}, {time} FROM {identifier(fact.name)}")  # nosec B608
        stored = Counter((r[0], datetime.combine(r[1], r[2])) for r in rows)
        lake_versions = shipped[fact.source].versions
        results.append(History(
            fact.name, len(lake_versions),
            lost=sorted(v for v in lake_versions if v not in stored),
            twice=sorted(v for v, n in stored.items() if n > 1),
            unshipped=sorted(v for v in stored if v not in lake_versions),
            reshipped=shipped[fact.source].reshipped))
    return results


def shipped_versions(ingest_bucket: str, processed_bucket: str, sources: set[str]) -> dict[str, Shipped]:
    """Source table -> what the lake's runs shipped of it (`Shipped`)."""
    runs = lake.runs_after(ingest_bucket, None)
    with ThreadPoolExecutor(8) as pool:
        read = list(pool.map(lambda run_id: _run_versions(ingest_bucket, processed_bucket, run_id, sources), runs))
    per_run = [found for found, _ in read]
    full_reads = {run_id: full for run_id, (_, full) in zip(runs, read) if full}
    result = {s: Shipped() for s in sources}
    for source in sources:
        first: dict[Version, str] = {}
        again: dict[Version, list[str]] = {}
        keys: dict[str, list[str]] = {}
        for run_id, found in zip(runs, per_run):
            if source not in found:
                continue
            carried, held, keys[run_id] = found[source]
            result[source].versions |= carried - held
            for version in carried:
                if version in first:
                    again.setdefault(version, [first[version]]).append(run_id)
                else:
                    first[version] = run_id
        on_purpose = {v: r for v, r in again.items() if all(source in full_reads.get(run, ()) for run in r[1:])}
        result[source].reread = len(on_purpose)
        result[source].reread_by = {run_id for r in on_purpose.values() for run_id in r[1:]}
        again = {v: r for v, r in again.items() if v not in on_purpose}
        if again:
            result[source].reshipped, copies = _same_rows(ingest_bucket, source, again, keys)
            carried_by = {run_id: found[source][0] for run_id, found in zip(runs, per_run) if source in found}
            whole = {run_id for run_id, full in full_reads.items() if source in full}
            result[source].alike = _alike(copies, carried_by, whole)
    return result


def _alike(copies: dict[Version, list[tuple[str, tuple]]], carried_by: dict[str, set[Version]],
           whole: set[str] = frozenset()) -> dict[Version, tuple[tuple, list[str]]]:
    """Of the reshipped versions (each with every run that carried it and its row there), those whose
    copies are all the same row, with no run between the first and the last carrying another version
    of the same id: version -> (row, the runs whose copies a wraparound must explain). A later copy by
    a run that read the table whole on purpose (`whole`: a restore, a failover) is explained already:
    left out of those runs."""
    alike = {version: (found[0][1], [found[0][0]] + [run_id for run_id, _ in found[1:] if run_id not in whole])
             for version, found in copies.items() if len({row for _, row in found}) == 1}
    ids = {i for i, _ in alike}
    others: dict[int, list[tuple[str, datetime]]] = {}
    for run_id, carried in carried_by.items():
        for i, stamp in carried:
            if i in ids:
                others.setdefault(i, []).append((run_id, stamp))
    for version, found in copies.items():
        first, last = found[0][0], found[-1][0]
        if version in alike and any(first < run_id < last and stamp != version[1]
                                    for run_id, stamp in others[version[0]]):
            del alike[version]
    return alike


def _same_rows(ingest_bucket: str, source: str, again: dict[Version, list[str]], keys: dict[str, list[str]]
               ) -> tuple[list[Reship], dict[Version, list[tuple[str, tuple]]]]:
    """Of the versions several runs carried, those a run shipped again unchanged: a copy whose whole
    row is the same as the copy just before it in run order. With those runs (each such copy and the
    one before it) and each of those versions' copies, (run, row) in run order.

    Only the copy just before counts: a version committed again under the same stamp is read again
    with its new values, so x, y, x over three runs is three commits the source showed (the later
    commit's values win, contract §3), not a run shipping what it should have dropped."""
    wanted: dict[str, set[Version]] = {}
    for version, run_ids in again.items():
        for run_id in run_ids:
            wanted.setdefault(run_id, set()).add(version)
    rows: dict[Version, list[tuple[str, tuple]]] = {}
    for run_id, versions in sorted(wanted.items()):
        for key in keys[run_id]:
            for version, row in _csv_rows(ingest_bucket, key, source, versions):
                rows.setdefault(version, []).append((run_id, row))
    reshipped, copies = [], {}
    for version in sorted(rows):
        found = rows[version]
        again = {i for i in range(1, len(found)) if found[i][1] == found[i - 1][1]}
        same = [run_id for i, (run_id, _) in enumerate(found) if i in again or i + 1 in again]
        if same:
            reshipped.append((version, same))
            copies[version] = rows[version]
    return reshipped, copies


def _run_versions(ingest_bucket: str, processed_bucket: str, run_id: str, sources: set[str]
                  ) -> tuple[dict[str, tuple[set[Version], set[Version], list[str]]], set[str]]:
    """Source table -> (the versions this run's CSVs carried, those the processor held back, their keys);
    and the tables the run read whole on purpose (`FULL_READS`: all of them; else those `complete`)."""
    try:
        manifest = manifests.read(ingest_bucket, run_id)
    except InvalidInput:
        return {}, set()  # a corrupt manifest names nothing (it was quarantined, never trusted)
    entries, _hostile = manifests.entries(manifest, run_id, sources, "csv")
    held_files, held_rows = _held_back(processed_bucket, run_id)
    found: dict[str, tuple[set[Version], set[Version], list[str]]] = {}
    for entry in entries:  # a table in parts (contract §4) gives an entry per part: together, the run's
        if entry.key in held_files:
            continue
        carried, held, keys = found.setdefault(entry.table, (set(), set(), []))
        carried |= _csv_versions(ingest_bucket, entry.key, entry.table)
        held |= held_rows.get(entry.key, set())
        keys.append(entry.key)
    return found, set(sources) if manifest.get("read") in FULL_READS else manifests.complete_tables(manifest, sources)


def _held_back(processed_bucket: str, run_id: str) -> tuple[set[str], dict[str, set[Version]]]:
    """The CSVs the processor quarantined whole, and the versions it held back row by row."""
    try:
        manifest = manifests.read(processed_bucket, run_id)
    except InvalidInput:
        return set(), {}
    except ClientError as e:
        if is_missing(e):  # no processed manifest yet: nothing held back so far
            return set(), {}
        raise
    files, rows = set(), {}
    for entry in manifest.get("quarantined", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            continue
        if entry.get("error_kind") == "quarantined_rows" and isinstance(entry.get("quarantine_key"), str):
            table = entry.get("table")
            if isinstance(table, str):
                rows[entry["key"]] = _csv_versions(processed_bucket, entry["quarantine_key"], table)
        elif entry.get("error_kind") == quarantine.QUARANTINED_FILE:
            files.add(entry["key"])
    return files, rows


def _csv_versions(bucket: str, key: str, table: str) -> set[Version]:
    """The (id, last_updated) pairs of a CSV the ingest wrote, or of rows the processor held back.

    Read as the processor reads (`process.read.text_columns`): a row whose id or stamp does not
    read, or with a value too big to travel, cannot be in the warehouse: the processor held it
    back, so it is left out here as well."""
    return {version for version, _ in _csv_rows(bucket, key, table)}


def _csv_rows(bucket: str, key: str, table: str, versions: set[Version] | None = None
              ) -> list[tuple[Version, tuple]]:
    """(version, row) for each row of a CSV whose version reads (and is in `versions`, if given);
    the row is the tuple of all its columns' texts, or () when `versions` is None (keys only)."""
    id_column = f"{table}_id"
    fd, path = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    try:
        s3.download(bucket, key, path)
        columns = source_table(table).column_names if versions is not None else [id_column, "last_updated"]
        data = read.text_columns(path, columns)
    finally:
        Path(path).unlink(missing_ok=True)  # s3.download removes what it wrote when it fails midway
    found = []
    ids, stamps = data.column(id_column).to_pylist(), data.column("last_updated").to_pylist()
    values = list(zip(*(data.column(c).to_pylist() for c in data.column_names))) if versions is not None else None
    for i, (ident, stamp) in enumerate(zip(ids, stamps)):
        try:
            # A timestamptz source column (a type change that fits): its wall clock, as the processor reads it.
            version = (int(ident), datetime.fromisoformat(stamp).replace(tzinfo=None))
        except (TypeError, ValueError):
            continue
        if versions is None:
            found.append((version, ()))
        elif version in versions:
            found.append((version, values[i]))
    return found
