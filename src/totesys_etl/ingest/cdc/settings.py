"""The change data capture settings (contract §10), read from the environment like config.Settings."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from totesys_etl.config import whole_number_setting
from totesys_etl.errors import ConfigurationError
from totesys_etl.ingest.cdc.slot import checked_name

MODE_VARIABLE = "TOTESYS_SOURCE_MODE"
MODES = ("poll", "cdc")
#: contract §10: the `cdc_slot_lag` ERROR fires when the slot retains more WAL than this.
DEFAULT_MAX_LAG_MB = 1024
#: Row messages one run reads at most (then it ends at that transaction's commit; the next run
#: goes on): a run's versions stay well within a Lambda's memory and time.
DEFAULT_MAX_CHANGES = 200_000


def source_mode(env: Mapping[str, str] | None = None) -> str:
    """`poll` (the default) or `cdc`; ConfigurationError (exit 2) for anything else."""
    env = os.environ if env is None else env
    mode = (env.get(MODE_VARIABLE) or "poll").strip().lower()
    if mode not in MODES:
        raise ConfigurationError(f"{MODE_VARIABLE} must be poll or cdc, not {mode[:20]!r}")
    return mode


@dataclass(frozen=True)
class CdcSettings:
    slot: str = "totesys_etl"
    publication: str = "totesys_etl"
    max_lag_bytes: int = DEFAULT_MAX_LAG_MB << 20
    max_changes: int = DEFAULT_MAX_CHANGES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "CdcSettings":
        env = os.environ if env is None else env
        return cls(slot=checked_name("TOTESYS_CDC_SLOT", env.get("TOTESYS_CDC_SLOT") or cls.slot),
                   publication=checked_name("TOTESYS_CDC_PUBLICATION",
                                            env.get("TOTESYS_CDC_PUBLICATION") or cls.publication),
                   max_lag_bytes=whole_number_setting(env, "TOTESYS_CDC_MAX_LAG_MB", DEFAULT_MAX_LAG_MB, "MB") << 20,
                   max_changes=whole_number_setting(env, "TOTESYS_CDC_MAX_CHANGES", DEFAULT_MAX_CHANGES,
                                                    "changes"))
