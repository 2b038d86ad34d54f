"""The lake's bookkeeping of courier files (contract §9): which landed objects are taken, and the sweep's mark.

Written by the ingest stage (`ingest/courier.py`, which says why the design is safe) and read by
the read-only views, reconcile's courier check and `status` (`landed.py`): so it lives here,
beside `runs.py` and `manifest.py`, and a view never reaches into a stage.
- A taken object (its bucket, key and ETag) has a create-only marker
  `_state/landing/<sha256 of bucket, key, ETag>.json` in the ingested bucket, naming its run.
- The sweep's low-water mark lives under `_state/landing_mark/` in the ingested bucket.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from totesys_etl.adapters import s3
from totesys_etl.config import Settings

MARKER_PREFIX = "_state/landing/"
MARK_PREFIX = "_state/landing_mark/"


@dataclass(frozen=True)
class Landed:
    """One version of one landed object."""

    key: str
    etag: str
    last_modified: datetime | None = None


def landed_digest(bucket: str, key: str, etag: str) -> str:
    """The name of one landed object's state: a hash, so any key (`..`, quotes) is just input."""
    return hashlib.sha256(json.dumps([bucket, key, etag]).encode()).hexdigest()


def marker_key(bucket: str, key: str, etag: str) -> str:
    """Where the marker of a taken object lives."""
    return f"{MARKER_PREFIX}{landed_digest(bucket, key, etag)}.json"


def is_taken(settings: Settings, obj: Landed) -> bool:
    return s3.exists(settings.ingest_bucket, marker_key(settings.landing_bucket, obj.key, obj.etag))
