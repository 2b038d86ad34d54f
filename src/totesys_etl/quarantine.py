"""What is held back (contract §3 "Nothing lost", §6 `quarantine`): rows set aside, and the listing.

Everything quarantined lies in the processed bucket under `quarantine/<run_id>/`, each object
beside its `<key>.reason.json`: a file copied whole (`quarantine_file`, by the processor and the
loader), a manifest copied whole under the name of the bucket it came from (`quarantine_manifest`:
`quarantine/<run_id>/ingested/_runs/<run_id>.json` by the processor,
`quarantine/<run_id>/processed/_runs/<run_id>.json` by the loader), or a file's held-back rows
(`hold_rows`, by the processor), at `quarantine/<run_id>/<original csv key>.rows.csv`. Listing reads
those reason files only, wherever they lie under the run, so copies from before manifests had a
folder per bucket (`quarantine/<run_id>/_runs/<run_id>.json`) are listed as they were.
"""
from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from totesys_etl import lake
from totesys_etl.adapters import s3
from totesys_etl.errors import ConfigurationError, is_missing, parse_json

QUARANTINED_ROWS = "quarantined_rows"
ROWS_SUFFIX = ".rows.csv"
REASON_SUFFIX = ".reason.json"


QUARANTINE_PREFIX = "quarantine/"
#: The most bytes of a reason file the listing reads whole. A stage writes a few hundred (held-back
#: rows: one count per rule broken, never a value); the longest it writes, a manifest's hostile
#: entries, lists at most manifest.MAX_LISTED_REJECTIONS of them, keys clipped (under 100 KB; before
#: that cap it followed the manifest's size). A larger object is listed by its size, unread.
MAX_REASON_BYTES = 16 << 20
QUARANTINED_FILE, QUARANTINED_MANIFEST = "quarantined_file", "quarantined_manifest"


def quarantine_key(run_id: str, key: str) -> str:
    """`quarantine/<run_id>/<original key>`: the original key is kept, only ever as an S3 key."""
    return f"{QUARANTINE_PREFIX}{run_id}/{key}"


def quarantine_file(from_bucket: str, key: str, to_bucket: str, run_id: str, reason: str, error_kind: str,
                    log, name: str | None = None) -> dict:
    """Nothing lost (contract §3): copy `key` aside with `<that key>.reason.json`, log an ERROR, go on.

    The original stays where it is; both writes are create-only, so a rerun or a second worker
    leaves them as they are. The copy is made inside S3, in parts for an original over 5 GiB, which
    CopyObject refuses (`s3.copy_create_only`; a courier file may be far larger). `name` replaces
    `key` in the copy's key (a key from outside the lake may be too long to prefix); the entry names
    `key`. Returns the entry a manifest lists for it.
    """
    target = quarantine_key(run_id, name or key)
    try:
        s3.copy_create_only(from_bucket, key, to_bucket, target)
    except ClientError as e:
        if not is_missing(e):
            raise
        reason = f"{reason} (the object does not exist)"
    entry = file_entry(key, reason, error_kind)
    # The ERROR before the reason file, which says "all there": a crash between the two then gives
    # a rerun that alarms again, never a quarantine that no alarm announced.
    log.error(f"quarantined {key}: {reason}", error_kind=error_kind, key=key, quarantine_key=target)
    s3.put_json_create_only(to_bucket, f"{target}{REASON_SUFFIX}", entry)
    return entry


def file_entry(key: str, reason: str, error_kind: str) -> dict:
    """What a manifest lists for a file quarantined whole (and its reason file holds)."""
    return {"key": key, "reason": reason, "error_kind": error_kind}


#: The buckets a quarantined manifest may come from, as the lake names them: the processor quarantines a
#: run's ingested manifest and the loader the same run's processed one, both `_runs/<run_id>.json`.
#: Each copy goes under its bucket's name: with one key for both, the first copy (writes are
#: create-only) stood for both and the second manifest's evidence was lost.
INGESTED, PROCESSED = "ingested", "processed"


def quarantine_manifest(from_bucket: str, origin: str, to_bucket: str, run_id: str, reason: str, log) -> dict:
    """Copy run `run_id`'s corrupt or hostile manifest from `from_bucket` (`origin`: INGESTED or
    PROCESSED, the role of that bucket) to `quarantine/<run_id>/<origin>/_runs/<run_id>.json`, with its
    reason file and an ERROR, as `quarantine_file` does. The reason names the bucket, since both
    manifests of a run have the same key. Returns the entry a manifest lists for it."""
    if origin not in (INGESTED, PROCESSED):
        raise ValueError(f"not a bucket a manifest comes from: {origin!r}")
    key = lake.manifest_key(run_id)
    return quarantine_file(from_bucket, key, to_bucket, run_id, f"in the {origin} bucket: {reason}",
                           QUARANTINED_MANIFEST, log, name=f"{origin}/{key}")


def quarantine_body(bucket: str, run_id: str, key: str, body: bytes, reason: str, error_kind: str, log) -> dict:
    """Nothing lost, for input that never was an object (an API's answer): write `body` at
    `quarantine/<run_id>/<key>` with its reason file, create-only, and log an ERROR."""
    target = quarantine_key(run_id, key)
    s3.put_create_only(bucket, target, body)
    entry = file_entry(key, reason, error_kind)
    log.error(f"quarantined {key}: {reason}", error_kind=error_kind, key=key, quarantine_key=target)
    s3.put_json_create_only(bucket, f"{target}{REASON_SUFFIX}", entry)
    return entry


def rows_key(run_id: str, key: str) -> str:
    """Where the rows held back from `key` in a run go: `quarantine/<run_id>/<key>.rows.csv`."""
    return f"{quarantine_key(run_id, key)}{ROWS_SUFFIX}"


def hold_rows(bucket: str, run_id: str, table: str, key: str, held, log) -> dict:
    """Publish a file's held-back rows (a `process.rows.HeldRows`) with their reason file; log an ERROR.

    Both writes are create-only and their content follows from the input alone, so a rerun or a
    second processor leaves them as they are. Returns the entry the processed manifest lists.
    """
    target = rows_key(run_id, key)
    s3.upload_file_create_only(bucket, target, held.path)
    entry = rows_entry(run_id, table, key, held)
    log.error(f"held back {held.count} row(s) of {key}: {entry['reason']}", error_kind=QUARANTINED_ROWS, key=key,
              table=table, rows=held.count, quarantine_key=target)
    s3.put_json_create_only(bucket, f"{target}{REASON_SUFFIX}", entry)  # after the ERROR: see quarantine_file
    return entry


def rows_entry(run_id: str, table: str, key: str, held) -> dict:
    """What a manifest lists for a file's held-back rows (and their reason file holds): it follows from
    the rows alone, so a rerun that finds them quarantined already lists them alike without reading."""
    reasons = dict(sorted(held.reasons.items()))
    summary = "; ".join(f"{reason} ({n} row{'s' if n != 1 else ''})" for reason, n in reasons.items())
    return {"table": table, "key": key, "rows": held.count, "reason": summary, "reasons": reasons,
            "error_kind": QUARANTINED_ROWS, "quarantine_key": rows_key(run_id, key)}


@dataclass(frozen=True)
class Held:
    """One quarantined file, manifest or group of rows, as its reason file describes it."""

    run_id: str
    table: str
    key: str
    kind: str
    rows: int | None
    reason: str

    def line(self) -> str:
        what = f"{self.rows} row{'s' if self.rows != 1 else ''}" if self.rows is not None else "whole file"
        key = self.key if self.key.isprintable() else repr(self.key)  # one line, whatever a key holds
        return f"{self.run_id}  {self.table}  {key}  {what}  {self.kind}: {self.reason}"


def listed(bucket: str, run_id: str | None = None) -> list[Held]:
    """Everything held back in `bucket`, by run then key; only run `run_id` when given.

    ConfigurationError for a `run_id` that is not one (it would name a prefix, not a run).
    """
    if run_id is not None and not lake.RUN_ID.fullmatch(run_id):
        raise ConfigurationError(f"--run {run_id!r} is not a run id (e.g. 20261123T061128123456Z)")
    prefix = quarantine_key(run_id, "") if run_id else QUARANTINE_PREFIX
    held = []
    for key in s3.list_keys(bucket, prefix):
        run = key[len(QUARANTINE_PREFIX):].split("/", 1)[0]
        if not key.endswith(REASON_SUFFIX) or not lake.RUN_ID.fullmatch(run):
            continue
        try:
            held.append(_entry(run, key, s3.get_bytes(bucket, key, MAX_REASON_BYTES)))
        except s3.TooLarge as e:
            held.append(_unknown(run, key, f"its reason file is {e.size:,} bytes, not read"))
    return sorted(held, key=lambda h: (h.run_id, h.key, h.kind))


def _quarantined(run_id: str, reason_key: str) -> str:
    """The key a reason file is about: its own key without the prefix and `.reason.json`."""
    return reason_key[len(quarantine_key(run_id, "")):-len(REASON_SUFFIX)]


def _unknown(run_id: str, reason_key: str, reason: str) -> Held:
    """The entry of a reason file that is not what a stage writes: still listed, with why."""
    quarantined = _quarantined(run_id, reason_key)
    return Held(run_id, _table_of(quarantined), quarantined, "unknown", None, reason)


def _entry(run_id: str, reason_key: str, body: bytes) -> Held:
    """A reason file as a listing entry; one that is not the JSON a stage writes is still listed."""
    quarantined = _quarantined(run_id, reason_key)
    try:
        document = parse_json(body, "its reason file", ValueError)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return _unknown(run_id, reason_key, "its reason file is not JSON")
    key = document.get("key") if isinstance(document.get("key"), str) else quarantined
    rows = document.get("rows") if isinstance(document.get("rows"), int) else None
    table = document.get("table") if isinstance(document.get("table"), str) else _table_of(key)
    return Held(run_id, table, key, str(document.get("error_kind", "unknown")), rows,
                " ".join(str(document.get("reason", "")).split()))


def _table_of(key: str) -> str:
    """The table a lake key belongs to (`<table>/year=…`), or `-` for a manifest or a stray key."""
    head, _, rest = key.partition("/")
    return head if rest.startswith("year=") else "-"
