"""Run manifests, the contract between the stages (contract §4), declared and checked in one place.

Each stage writes one manifest per run, `_runs/<run_id>.json`, last, so that its existence says
the run is complete; the next stage trusts nothing else. Both kinds share `run_id`, `stage`,
`format` and `files` (`{table: {"key", "rows", ...}}`, or for a table split into parts
`{table: {"rows", "parts": [{"key", "rows"}, ...]}}`, contract §4 "Parts"):

- `ingest` adds `previous_run_id`, `rows` (all eleven tables), and the watermark the next ingest
  reads: `snapshot`, `cutoff`, `overlap_seconds`, `read`, `in_progress`, `seen`, `unread`,
  `rescanned_at`, `source_identity`, `xid_state` when its id sets are large (their
  `_state/ingest_xids/` object, ingest/xid_state.py), and when there are any `stopped` (tables
  not read for a missing column, with the watermark each resumes from) and `new_columns` (columns
  the source added, ignored; `status` may report them) (readme_files/adr/0001-late-commits.md); with the FX
  source on, `fx` (the newest FX day stored, ingest/fx.py) and an `fx_rate` entry in `files` and
  `rows` (readme_files/fx.md);
- `process` adds `quarantined`: the files, row groups and manifest entries held back, with reasons;
  of a manifest's hostile entries the first MAX_LISTED_REJECTIONS, then one entry counting the rest
  (`more`), so that millions of them never make a processed manifest too large to write.

A manifest is read back only through `read`/`parse` (`read_bytes` for its bytes): it must be at
most MAX_BYTES, a JSON object naming its own run, with the fields its stage declares, and a `files`
entry is trusted only if it names a table the reading stage reads and exactly the key the lake's
layout gives that table in this run, with a row count. Anything else (another run's file, `..`,
quotes, an unknown table) is never opened.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.errors import EtlError, InvalidInput, lake_errors, parse_json

FORMAT = {"ingest": 2, "process": 1}
#: What every reader requires; `stage` and `format` are written for people and tools, not required.
COMMON_FIELDS = ("run_id", "files")
#: The fields an ingest manifest must hold for the next ingest to trust its watermark.
INGEST_FIELDS = (*COMMON_FIELDS, "stage", "rows", "snapshot", "cutoff")
#: The most bytes a manifest may hold: a larger object at a manifest's key is a corrupt manifest,
#: quarantined and skipped unread, and no stage writes one (`write`). Why 16 MiB: the largest
#: manifest in use, a 30M-order first load in parts at the default TOTESYS_PART_ROWS (58 parts), is
#: 11.5 KB, and the id sets a manifest keeps inline stay under 64 KB (ingest/xid_state.py);
#: manifests written before those sets had an object of their own reached 1.6 MB (benchmarks.md,
#: issue 34). A part entry is about 130 bytes, so 16 MiB holds about 129,000 parts: a 30M-order
#: first load (114M source rows) with TOTESYS_PART_ROWS as low as about 900. Such a manifest parsed
#: in 0.2 s and its entries were checked in 1.6 s on the 2-core machine (166 MiB peak RSS, building
#: it included); a multi-GB object read whole would kill the stage for memory, with no error line, on
#: every attempt.
MAX_BYTES = 16 << 20
#: The hostile entries of one manifest listed one by one (in the processed manifest, the reason file,
#: the ERROR line); the rest are counted (`rejection_reason`, `rejection_entries`). A manifest of
#: MAX_BYTES holds millions of entries, and one listing each with its reason (about 150 bytes)
#: was too large to write as a processed manifest, failing the run for good. Nothing is lost: the
#: quarantined copy of the manifest holds every entry.
MAX_LISTED_REJECTIONS = 100
#: The characters of a hostile key or table name a listing shows (then `… (N characters)`): enough to
#: tell it by. A key in a manifest may be megabytes long; the quarantined manifest holds it whole.
MAX_SHOWN_CHARS = 200


@dataclass(frozen=True)
class FileEntry:
    """A manifest entry that names exactly the file the layout expects, with its row count.

    A table split into parts (contract §4 "Parts") gives one entry per part: `part` is its
    number (None for an unsplit table's one file) and `parts` how many the table has.
    """

    table: str
    key: str
    rows: int
    part: int | None = None
    parts: int = 1


@dataclass(frozen=True)
class RejectedEntry:
    """A manifest entry that must never be opened: the key it names (as given) and why."""

    table: str
    key: str
    reason: str


class Rejections(list):
    """A manifest's hostile entries, in table order: the first MAX_LISTED_REJECTIONS as RejectedEntry
    (the list itself), and `more`, how many follow them. Those are counted, never built: a manifest of
    MAX_BYTES may hold millions, and building each one's entry took 16 s and 540 MB."""

    def __init__(self):
        super().__init__()
        self.more = 0

    def __bool__(self) -> bool:
        return bool(len(self) or self.more)

    def add(self, table: str, key, run_id: str, reason: Callable[[str], str]) -> None:
        """One hostile entry: `key` as the manifest gives it (anything), `reason` made from the table's
        name as shown, and only for an entry listed."""
        if len(self) >= MAX_LISTED_REJECTIONS:
            self.more += 1
            return
        shown = _shown(key if isinstance(key, str) else f"{lake.manifest_key(run_id)}#files/{table}")
        self.append(RejectedEntry(_shown(table), shown, reason(_shown(table))))


def rejection_reason(rejected: Rejections) -> str:
    """One line for a manifest's hostile entries, each listed one as its reason and key, then how many
    more (the reason file and ERROR line of the quarantined manifest)."""
    reason = "; ".join(f"{r.reason} ({r.key!r})" for r in rejected)
    return f"{reason}; {_more(rejected.more)}" if rejected.more else reason


def rejection_entries(rejected: Rejections, run_id: str, error_kind: str) -> list[dict]:
    """The processed manifest's `quarantined` entries for a manifest's hostile entries: each listed
    one, then, if more follow, one entry for them all with their count in `more`."""
    entries = [{"key": r.key, "reason": r.reason, "error_kind": error_kind} for r in rejected]
    if rejected.more:
        entries.append({"key": lake.manifest_key(run_id), "reason": _more(rejected.more), "error_kind": error_kind,
                        "more": rejected.more})
    return entries


def quarantined_count(quarantined: list[dict]) -> int:
    """How many items a `quarantined` list holds back: one per entry, `more` for an entry counting the rest."""
    return sum(entry["more"] if isinstance(entry.get("more"), int) else 1 for entry in quarantined)


def _more(count: int) -> str:
    return f"and {count:,} more hostile entries, not listed: the quarantined manifest holds them all"


def _shown(text: str) -> str:
    """A hostile key or table name as a listing shows it: whole, or its first MAX_SHOWN_CHARS."""
    return text if len(text) <= MAX_SHOWN_CHARS else f"{text[:MAX_SHOWN_CHARS]}… ({len(text):,} characters)"


def ingest_manifest(run_id: str, previous_run_id: str | None, watermark: dict, files: dict[str, dict],
                    rows: dict[str, int]) -> dict:
    """An ingest run's manifest. `watermark` holds the fields the next ingest reads (see above)."""
    return {"run_id": run_id, "stage": "ingest", "format": FORMAT["ingest"], "previous_run_id": previous_run_id,
            **watermark, "files": files, "rows": rows}


#: The `source` field of an ingest manifest written for one landed courier file (contract §9).
COURIER_SOURCE = "courier"


def courier_manifest(run_id: str, landing: dict, files: dict[str, dict], rows: dict[str, int],
                     quarantined: list[dict]) -> dict:
    """An ingest run made of one landed courier file: `source` "courier", `landing` its bucket, key and
    ETag, and what was held back. It carries no watermark: the totesys ingest never reads it as
    its previous run (ingest/watermark.py)."""
    return {"run_id": run_id, "stage": "ingest", "format": FORMAT["ingest"], "source": COURIER_SOURCE,
            "landing": landing, "files": files, "rows": rows, "quarantined": quarantined}


def is_courier(manifest: dict) -> bool:
    return manifest.get("source") == COURIER_SOURCE


def processed_manifest(run_id: str, files: dict[str, dict], quarantined: list[dict],
                       complete: Collection[str] = ()) -> dict:
    """A processed run's manifest: the Parquet files per warehouse table, and what was held back;
    `complete`, the tables whose files hold every row of their source (see `complete_tables`)."""
    manifest = {"run_id": run_id, "stage": "process", "format": FORMAT["process"],
                "files": dict(sorted(files.items())), "quarantined": quarantined}
    if complete:
        manifest[COMPLETE_FIELD] = sorted(complete)
    return manifest


#: A run whose tables are whole images of the source (a CDC snapshot, contract §10) lists them here:
#: an id the warehouse holds that such a table lacks was deleted in the source before that run.
COMPLETE_FIELD = "complete"


def complete_tables(manifest: dict, tables: Collection[str]) -> set[str]:
    """The tables `manifest` declares complete, among `tables` (anything else is ignored)."""
    declared = manifest.get(COMPLETE_FIELD)
    if not isinstance(declared, list):
        return set()
    return {t for t in declared if isinstance(t, str) and t in tables}


def write(bucket: str, manifest: dict) -> bool:
    """Create the run's manifest; False if it already exists (a rerun of a finished run).

    A manifest over MAX_BYTES is never written (EtlError): every reader would quarantine it.
    """
    key = lake.manifest_key(manifest["run_id"])
    body = s3.json_body(manifest)
    if len(body) > MAX_BYTES:
        raise EtlError(f"manifest {key} would be {len(body):,} bytes, more than a manifest may be ({MAX_BYTES:,}): "
                       "not written; fewer parts (a larger TOTESYS_PART_ROWS) make it smaller")
    return s3.put_create_only(bucket, key, body, "application/json")


def read_bytes(bucket: str, run_id: str) -> bytes:
    """The manifest's bytes; InvalidInput, unread, if it is larger than MAX_BYTES.

    S3's own errors (a missing object included) are raised as they are, for the caller to judge.
    """
    key = lake.manifest_key(run_id)
    try:
        return s3.get_bytes(bucket, key, MAX_BYTES)
    except s3.TooLarge as e:
        raise InvalidInput(f"manifest {key} is {e.size:,} bytes, more than a manifest may be ({MAX_BYTES:,})"
                           ) from None


def read_if_present(bucket: str, run_id: str) -> dict | None:
    """The manifest of a run a listing named, or None if it is gone since (deleted behind the reader's
    back). InvalidInput if it is too large, not JSON or not this run's; S3's failures as
    LakeUnavailable (`lake_errors`)."""
    with lake_errors(bucket, lake.manifest_key(run_id), missing_ok=True) as call:
        body = read_bytes(bucket, run_id)
    return None if call.missing else parse(body, run_id)


def read(bucket: str, run_id: str, required: tuple[str, ...] = COMMON_FIELDS) -> dict:
    """The manifest as a dict; InvalidInput if it is too large, not JSON or lacks a required field.

    S3's own errors (a missing object included) are raised as they are, for the caller to judge.
    """
    return parse(read_bytes(bucket, run_id), run_id, required)


def parse(body: bytes, run_id: str, required: tuple[str, ...] = COMMON_FIELDS) -> dict:
    """Parse a manifest's bytes; InvalidInput unless it is a JSON object of this run with `required`."""
    where = lake.manifest_key(run_id)
    manifest = parse_json(body, f"manifest {where}")
    if not isinstance(manifest, dict):
        raise InvalidInput(f"manifest {where} is not a JSON object")
    return require(manifest, run_id, required)


def require(manifest: dict, run_id: str, required: tuple[str, ...] = COMMON_FIELDS) -> dict:
    """`manifest` (a parsed JSON object) if it is this run's with `required`; InvalidInput if not."""
    where = lake.manifest_key(run_id)
    missing = [f for f in dict.fromkeys((*COMMON_FIELDS, *required)) if f not in manifest]
    if missing:
        raise InvalidInput(f"manifest {where} lacks {', '.join(missing)}")
    if manifest["run_id"] != run_id:
        raise InvalidInput(f"manifest {where} names another run {manifest['run_id']!r}")
    if not isinstance(manifest["files"], dict):
        raise InvalidInput(f"manifest {where}: files is not an object")
    return manifest


def parted_entry(parts: list[dict]) -> dict:
    """The `files` entry of a table split into parts: its rows in all, and each part's key and rows
    in part order (`{"rows": N, "parts": [{"key", "rows"}, ...]}`; contract §4 "Parts")."""
    return {"rows": sum(p["rows"] for p in parts), "parts": [{"key": p["key"], "rows": p["rows"]} for p in parts]}


def _valid_rows(rows) -> bool:
    return isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0


def entries(manifest: dict, run_id: str, tables: Collection[str], extension: str
            ) -> tuple[list[FileEntry], Rejections]:
    """Split a parsed manifest's `files` into trusted entries and hostile ones, each in table order.

    A table in parts gives one entry per part, in part order; it is trusted only whole (every
    part named exactly as the layout gives part i, rows adding up to the table's), since a run
    missing a part must never look loaded. Keys are compared as strings; they never become paths
    or SQL. A hostile entry's key is shown as given (clipped past MAX_SHOWN_CHARS, as its table is), or
    as `_runs/<run_id>.json#files/<table>`; past MAX_LISTED_REJECTIONS hostile entries are only counted.
    """
    accepted, rejected = [], Rejections()
    for table, entry in sorted(manifest["files"].items()):
        key = entry.get("key") if isinstance(entry, dict) else None
        rows = entry.get("rows") if isinstance(entry, dict) else None
        parts = entry.get("parts") if isinstance(entry, dict) else None
        if table not in tables:
            rejected.add(table, key, run_id, lambda shown: f"{shown!r} is not a table this stage reads")
        elif parts is not None:
            problem = _parts_problem(table, run_id, extension, parts, rows)
            if problem:
                rejected.add(table, key, run_id, lambda shown: problem)
            else:
                accepted.extend(FileEntry(table, p["key"], p["rows"], i, len(parts)) for i, p in enumerate(parts))
        elif key != lake.table_key(table, run_id, extension):
            rejected.add(table, key, run_id, lambda shown: f"entry for {shown!r} does not name this run's file of it")
        elif not _valid_rows(rows):
            rejected.add(table, key, run_id, lambda shown: f"entry for {shown} has no valid row count")
        else:
            accepted.append(FileEntry(table, key, rows))
    return accepted, rejected


def _parts_problem(table: str, run_id: str, extension: str, parts, rows) -> str | None:
    """Why a parted entry cannot be trusted, or None."""
    if not isinstance(parts, list) or not 0 < len(parts) <= lake.MAX_PARTS:
        return f"entry for {table!r} has no valid list of parts"
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("key") != lake.part_key(table, run_id, extension, i):
            return f"part {i} of {table!r} does not name this run's part {i} of it"
        if not _valid_rows(part.get("rows")):
            return f"part {i} of {table} has no valid row count"
    if rows != sum(p["rows"] for p in parts):
        return f"entry for {table} has a row count that is not the sum of its parts'"
    return None
