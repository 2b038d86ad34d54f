"""Fan-out: asking other invocations of a stage to handle the parts of a run (contract §4 "Parts").

A stage that meets a run split into parts calls `fan_out(stage, requests)`. When a fan-out is
configured, each request goes to an invocation of its own (the event is `events.part_event`) and
`fan_out` returns True without waiting: each part invocation does its part, and whichever finds
every part done finishes the run (the sweep finishes it otherwise). When none is configured, it
returns False and the caller handles the parts itself, one after another, in this invocation.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from totesys_etl.errors import ConfigurationError
from totesys_etl.events import PartRequest

#: Which fan-out a deployment uses; unset means none (the caller handles every part itself).
FANOUT_VARIABLE = "TOTESYS_FANOUT"


def fan_out(stage: str, requests: Sequence[PartRequest], env: Mapping[str, str] | None = None) -> bool:
    """Send each of `stage`'s part requests to an invocation of its own; False if none is configured."""
    env = os.environ if env is None else env
    mode = env.get(FANOUT_VARIABLE, "")
    if not mode or not requests:
        return False
    raise ConfigurationError(f"{FANOUT_VARIABLE}={mode[:40]!r} is not a fan-out this build knows")
