"""What every stage does with runs: one result type, one way to handle a list of runs, one sweep.

The processor and the loader both find their work the same way (contract §4): list the runs after a
low-water mark, handle those not done yet in `run_id` order, move the mark to the last run below
which every run is done, never past a run id younger than the settle period, and fail the call at
the end if any run failed. Each stage supplies only what is done, how to handle one run and where
its mark lives; the rule for marks and failures is written once, here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from totesys_etl import lake
from totesys_etl.errors import EtlError, describe, kind_of
from totesys_etl.logs import StageLog


@dataclass(frozen=True)
class RunResult:
    """One run handled by one stage: rows written per table, files, quarantined entries, seconds."""

    run_id: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    files: int = 0
    quarantined: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunResult":
        return cls(data["run_id"], dict(data.get("rows", {})), float(data.get("seconds", 0.0)),
                   int(data.get("files", 0)), int(data.get("quarantined", 0)))


@dataclass(frozen=True)
class StageResult:
    """What a handler returns: `{"stage", "status": "ok"|"deferred", "runs": [...], "seconds"}`."""

    stage: str
    runs: tuple[RunResult, ...] = ()
    seconds: float = 0.0
    status: str = "ok"

    def to_json(self) -> dict:
        return {"stage": self.stage, "status": self.status, "runs": [r.to_json() for r in self.runs],
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict) -> "StageResult":
        """A handler's return value read back: the processor's and loader's shape, or the ingest's
        (one run, its fields at the top level)."""
        if "runs" in data:
            runs = tuple(RunResult.from_json(r) for r in data["runs"])
            return cls(data["stage"], runs, float(data.get("seconds", 0.0)), data.get("status", "ok"))
        return cls(data["stage"], (RunResult.from_json(data),), float(data.get("seconds", 0.0)))

    @property
    def rows(self) -> int:
        return sum(sum(r.rows.values()) for r in self.runs)

    @property
    def quarantined(self) -> int:
        return sum(r.quarantined for r in self.runs)


def handle_each(run_ids: Iterable[str], handle_one: Callable[[str], RunResult | None], log: StageLog,
                fatal: tuple[type[BaseException], ...] = (), unknown_kind: str = EtlError.error_kind
                ) -> tuple[list[RunResult], dict[str, str]]:
    """Handle the runs in order; a run that fails is logged with its error_kind and the others go on.

    A newer run never waits for an older one that cannot be handled. Returns the results (None from
    `handle_one` means "nothing to do") and the failed runs with a one-line reason each. An error
    of a `fatal` type (say, the connection every run needs was lost) stops at once. A failure the
    project does not name (a bug, a database error) counts under `unknown_kind`.
    """
    results, failed = [], {}
    for run_id in run_ids:
        try:
            result = handle_one(run_id)
        except fatal:
            raise
        except Exception as e:  # each run on its own: log it with its kind, carry on, fail at the end
            failed[run_id] = describe(e)
            kind = kind_of(e)
            log.bind(run_id=run_id).error(f"run failed: {failed[run_id]}",
                                          error_kind=unknown_kind if kind == EtlError.error_kind else kind)
            continue
        if result is not None:
            results.append(result)
    return results, failed


def raise_if_failed(failed: dict[str, str], error: type[EtlError]) -> None:
    """One error naming every failed run and its reason (each already logged with its own kind)."""
    if failed:
        reasons = "; ".join(f"{run_id} ({why})" for run_id, why in failed.items())
        exc = error(f"{len(failed)} run(s) {getattr(error, 'runs_failed', 'failed')}: {reasons}")
        exc.logged = True
        raise exc


@dataclass
class Sweep:
    """One stage's view of the lake for a sweep.

    `candidates`: every run after the mark that the mark must account for (sorted); `done`: those
    already handled; `todo`: those to handle now, in order.
    """

    mark: str | None
    candidates: list[str]
    done: set[str]
    todo: list[str]


def sweep(view: Sweep, handle_one: Callable[[str], RunResult | None], write_mark: Callable[[str], None],
          log: StageLog, error: type[EtlError], fatal: tuple[type[BaseException], ...] = (),
          unknown_kind: str = EtlError.error_kind) -> list[RunResult]:
    """Handle `view.todo`, then move the mark to the last settled candidate below which every run is
    done (up to the first failure, never past it), then raise `error` if any run failed.

    The mark only moves forward, and never past a run id younger than the settle period
    (`lake.settled`): a manifest may still appear below one (a slow ingest), and a corrupt manifest
    dated in the future must not hide the runs after it.
    """
    results, failed = handle_each(view.todo, handle_one, log, fatal, unknown_kind)
    done = view.done | {r.run_id for r in results}
    new_mark = lake.advance_mark(lake.settled(view.candidates), done)
    if new_mark and (view.mark is None or new_mark > view.mark):
        write_mark(new_mark)
        log.info("moved the low-water mark", mark=new_mark)
    raise_if_failed(failed, error)
    return results
