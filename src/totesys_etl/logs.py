"""Structured logs: one JSON object per line with level, stage, run_id and message (contract §6).

An ERROR line also carries `error_kind`, which CloudWatch metric filters count per kind.
Values that could hold secrets are never passed here: callers log names, counts and seconds.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

from totesys_etl.errors import describe, kind_of

_LOGGER = logging.getLogger("totesys_etl")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, default=str, ensure_ascii=False)


class _ReadableFormatter(logging.Formatter):
    """One short line per record for a person at a terminal: `stage run_id message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        head = " ".join(str(fields.pop(k)) for k in ("stage", "run_id") if fields.get(k))
        rest = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k not in ("request_id",))
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        return f"  {head:<32} {level}{record.getMessage()}" + (f"  ({rest})" if rest else "")


def readable(stream=None) -> None:
    """Show the package's INFO lines as readable text on `stream` (stderr): the command line's
    progress on a terminal and its `-v`. Replaces the JSON handler; handlers' own calls keep it."""
    _LOGGER.setLevel(logging.INFO)
    _LOGGER.handlers[:] = []
    _send_to(_ReadableFormatter(), stream)


def _send_to(formatter: logging.Formatter, stream) -> None:
    """The package's one handler: its lines, formatted so, on `stream` (stderr), nowhere else."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    _LOGGER.addHandler(handler)
    _LOGGER.propagate = False


def configure(level: str | None = None, stream=None) -> None:
    """Send the package's logs to stderr as JSON lines (Lambda and CLI alike).

    Without a `level`, a second call changes nothing, so a command's choice outlives the
    handlers' own calls.
    """
    if _LOGGER.handlers and level is None:
        return
    _LOGGER.setLevel((level or os.environ.get("TOTESYS_LOG_LEVEL") or "INFO").upper())
    _LOGGER.propagate = False
    if not _LOGGER.handlers:
        _send_to(_JsonFormatter(), stream)


_cold = True


def lambda_fields(context: object | None) -> dict:
    """The fields CloudWatch users filter a Lambda invocation's lines on: its request id and
    whether it is the container's first (a cold start). Nothing without a context (CLI, tests)."""
    global _cold
    if context is None:
        return {}
    fields = {"request_id": getattr(context, "aws_request_id", None), "cold_start": _cold}
    _cold = False
    return fields


class StageLog:
    """A logger bound to a stage and (once known) a run: every line carries both."""

    def __init__(self, stage: str, run_id: str | None = None, **fields):
        configure()
        self.fields = {"stage": stage, "run_id": run_id, **fields}

    def bind(self, **fields) -> "StageLog":
        bound = StageLog.__new__(StageLog)
        bound.fields = {**self.fields, **fields}
        return bound

    def _log(self, level: int, message: str, fields: dict) -> None:
        if _LOGGER.isEnabledFor(level):
            _LOGGER.log(level, message, extra={"fields": {**self.fields, **fields}})

    def info(self, message: str, **fields) -> None:
        self._log(logging.INFO, message, fields)

    def warning(self, message: str, **fields) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, error_kind: str, **fields) -> None:
        self._log(logging.ERROR, message, {"error_kind": error_kind, **fields})


class Timer:
    """Seconds since construction, for the `seconds` field of log lines and run summaries."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 4)


@contextmanager
def failures_logged(log: StageLog, what: str, on_failure: Callable[[Exception], None] | None = None
                    ) -> Iterator[None]:
    """A handler's body: any failure is logged once as ERROR with its `error_kind`, handed to
    `on_failure` (the handlers keep it for `status`), then re-raised.

    An error a stage already logged run by run (`error.logged`) is not logged again, so each
    failure counts once towards its alarm.
    """
    try:
        yield
    except Exception as e:
        if not getattr(e, "logged", False):
            log.error(f"{what} failed: {describe(e)}", kind_of(e))
        if on_failure is not None:
            on_failure(e)
        raise
