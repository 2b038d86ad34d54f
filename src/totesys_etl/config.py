"""Settings from the environment (contract §5). Handlers read only their environment.

Credentials are never read here: a database is named by a URL or by a Secrets Manager id, and
`adapters.postgres.connect` resolves it at the moment of connecting.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from totesys_etl.errors import ConfigurationError

DEFAULT_SOURCE_SECRET = "totesys_db_credentials"  # nosec B105 - a secret id (contract §5), not a secret
DEFAULT_WAREHOUSE_SECRET = "postgres_db_credentials"  # nosec B105 - a secret id, not a secret


@dataclass(frozen=True)
class Database:
    """Where a database's credentials come from: a URL (local runs) or a secret id (Lambda)."""

    name: str  # "source" or "warehouse": used in error messages, never the credentials
    url: str | None
    secret_id: str

    def __repr__(self) -> str:  # never print a URL: it holds a password
        return f"Database({self.name!r}, {'url' if self.url else 'secret ' + self.secret_id})"


#: contract §3 "Old stamps still arrive": the longest time between two scans by transaction id.
FULL_RESCAN_VARIABLE = "TOTESYS_FULL_RESCAN_SECONDS"
DEFAULT_FULL_RESCAN_SECONDS = 3600.0


def whole_number_setting(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    """A whole number >= 1 of `unit` from `env[name]` (default when unset); exit 2 otherwise."""
    text = env.get(name)
    if not text:
        return default
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise ConfigurationError(f"{name} must be a whole number of {unit} >= 1, not {text[:40]!r}")
    return value


def seconds_setting(env: Mapping[str, str], name: str, default: float) -> float:
    """A non-negative number of seconds from `env[name]` (default when unset); exit 2 otherwise."""
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, not {text!r}")
    return value


@dataclass(frozen=True)
class Settings:
    source: Database
    warehouse: Database
    ingest_bucket: str
    processed_bucket: str
    full_rescan_seconds: float = DEFAULT_FULL_RESCAN_SECONDS
    #: contract §5 TOTESYS_LANDING_BUCKET: where couriers drop files (§9); None: that source is off.
    landing_bucket: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        missing = [k for k in ("TOTESYS_INGEST_BUCKET", "TOTESYS_PROCESSED_BUCKET") if not env.get(k)]
        if missing:
            raise ConfigurationError(f"missing setting(s): {', '.join(missing)}")
        return cls(
            source=Database("source", env.get("TOTESYS_SOURCE_URL") or None,
                            env.get("TOTESYS_SOURCE_SECRET") or DEFAULT_SOURCE_SECRET),
            warehouse=Database("warehouse", env.get("TOTESYS_WAREHOUSE_URL") or None,
                               env.get("TOTESYS_WAREHOUSE_SECRET") or DEFAULT_WAREHOUSE_SECRET),
            ingest_bucket=env["TOTESYS_INGEST_BUCKET"],
            processed_bucket=env["TOTESYS_PROCESSED_BUCKET"],
            full_rescan_seconds=seconds_setting(env, FULL_RESCAN_VARIABLE, DEFAULT_FULL_RESCAN_SECONDS),
            landing_bucket=env.get("TOTESYS_LANDING_BUCKET") or None,
        )
