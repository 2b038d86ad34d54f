"""Progress lines for the long local commands (demo, bench): a step says what it does before it
starts and how long it took, so a slow step is visible while it runs."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, TextIO


@dataclass
class Steps:
    out: TextIO
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, action: Callable, *args, **kwargs):
        """Run `action(*args, **kwargs)` as the step `name`; its seconds go to `self.seconds`."""
        print(f"-> {name} ...", file=self.out, flush=True)
        start = time.perf_counter()
        result = action(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 2)
        print(f"   done in {self.seconds[name]:.1f}s", file=self.out, flush=True)
        return result
