"""Fact history against the lake: every version a run shipped is in the warehouse exactly once.

`reconcile` compares each fact's *current* version with the source; a lost *older* version would
pass that. The ingested CSVs are the record of every version the source showed to a run, so this
reads their version keys (`<source>_id`, `last_updated`: two columns, with pyarrow) from every run
a readable manifest names, leaves out the rows and files the processor held back (the processed
manifests list them), and compares the result with the fact table's version keys.
"""
from __future__ import annotations

import os
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
from totesys_etl.schema import FACTS, Table

Version = tuple[int, datetime]


@dataclass
class History:
    """One fact's versions: shipped by some run (minus those held back) against those stored."""

    fact: str
    shipped: int = 0
    lost: list[Version] = field(default_factory=list)        # shipped, not stored
    twice: list[Version] = field(default_factory=list)       # stored more than once
    unshipped: list[Version] = field(default_factory=list)   # stored, never shipped by a run

    @property
    def ok(self) -> bool:
        return not (self.lost or self.twice or self.unshipped)


def check_history(warehouse: Connection, ingest_bucket: str, processed_bucket: str,
                  facts: tuple[Table, ...] = FACTS) -> list[History]:
    """Each fact's history against the versions the lake's runs shipped."""
    shipped = shipped_versions(ingest_bucket, processed_bucket, {f.source for f in facts})
    results = []
    for fact in facts:
        source_id, date, time = (identifier(c) for c in fact.version_key)
        rows = warehouse.run(f"SELECT {source_id}, {date}, {time} FROM {identifier(fact.name)}")  # nosec B608
        stored = Counter((r[0], datetime.combine(r[1], r[2])) for r in rows)
        lake_versions = shipped[fact.source]
        results.append(History(
            fact.name, len(lake_versions),
            lost=sorted(v for v in lake_versions if v not in stored),
            twice=sorted(v for v, n in stored.items() if n > 1),
            unshipped=sorted(v for v in stored if v not in lake_versions)))
    return results


def shipped_versions(ingest_bucket: str, processed_bucket: str, sources: set[str]) -> dict[str, set[Version]]:
    """Source table -> the versions some run's CSV carried and the processor let through."""
    runs = lake.runs_after(ingest_bucket, None)
    with ThreadPoolExecutor(8) as pool:
        per_run = list(pool.map(lambda run_id: _run_versions(ingest_bucket, processed_bucket, run_id, sources), runs))
    versions: dict[str, set[Version]] = {s: set() for s in sources}
    for found in per_run:
        for source, run_versions in found.items():
            versions[source] |= run_versions
    return versions


def _run_versions(ingest_bucket: str, processed_bucket: str, run_id: str, sources: set[str]
                  ) -> dict[str, set[Version]]:
    try:
        manifest = manifests.read(ingest_bucket, run_id)
    except InvalidInput:
        return {}  # a corrupt manifest names nothing (it was quarantined, never trusted)
    entries, _hostile = manifests.entries(manifest, run_id, sources, "csv")
    held_files, held_rows = _held_back(processed_bucket, run_id)
    found: dict[str, set[Version]] = {}
    for entry in entries:
        if entry.key in held_files:
            continue
        versions = _csv_versions(ingest_bucket, entry.key, entry.table)
        found[entry.table] = versions - held_rows.get(entry.key, set())
    return found


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
    id_column = f"{table}_id"
    fd, path = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    try:
        s3.download(bucket, key, path)
        data = read.text_columns(path, [id_column, "last_updated"])
    finally:
        os.unlink(path)
    versions = set()
    for ident, stamp in zip(data.column(id_column).to_pylist(), data.column("last_updated").to_pylist()):
        try:
            versions.add((int(ident), datetime.fromisoformat(stamp)))
        except (TypeError, ValueError):
            continue
    return versions
