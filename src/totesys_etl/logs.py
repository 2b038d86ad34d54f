"""Structured logs: one JSON object per line with level, stage, run_id and message (contract §6).

An ERROR line also carries `error_kind`, which CloudWatch metric filters count per kind.
Values that could hold secrets are never passed here: callers log names, counts and seconds.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator, Mapping

from totesys_etl.config import whole_number_setting
from totesys_etl.errors import describe, kind_of

_LOGGER = logging.getLogger("totesys_etl")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, default=str, ensure_ascii=False)


def readable_line(fields: dict, message: str, level: str = "INFO") -> str:
    """One short line for a person: `stage run_id message (key=value ...)`, the level unless INFO."""
    fields = dict(fields)
    head = " ".join(str(fields.pop(k)) for k in ("stage", "run_id") if fields.get(k))
    rest = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k not in ("request_id",))
    prefix = "" if level == "INFO" else f"{level}: "
    return f"  {head:<32} {prefix}{message}" + (f"  ({rest})" if rest else "")


class _ReadableFormatter(logging.Formatter):
    """One short line per record for a person at a terminal (`readable_line`)."""

    def format(self, record: logging.LogRecord) -> str:
        return readable_line(getattr(record, "fields", {}), record.getMessage(), record.levelname)


def readable(stream=None) -> None:
    """Show the package's INFO lines as readable text on `stream` (stderr): the command line's
    progress on a terminal and its `-v`. Replaces the JSON handler; handlers' own calls keep it."""
    _LOGGER.handlers[:] = [h for h in _LOGGER.handlers if isinstance(h, _KeptHandler)]
    _send_to(_ReadableFormatter(), stream, logging.INFO)


def _send_to(formatter: logging.Formatter, stream, level: int | str = logging.NOTSET) -> None:
    """The package's one terminal handler: its lines at `level` and above, formatted so, on `stream` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.setLevel(level)
    _LOGGER.addHandler(handler)
    _LOGGER.propagate = False
    _settle_level()


def _settle_level() -> None:
    """The logger passes what its most talkative handler wants (each handler filters for itself)."""
    levels = [h.level or logging.INFO for h in _LOGGER.handlers]
    _LOGGER.setLevel(min(levels) if levels else logging.INFO)


def configure(level: str | None = None, stream=None) -> None:
    """Send the package's logs to stderr as JSON lines (Lambda and CLI alike).

    Without a `level`, a second call changes nothing, so a command's choice outlives the
    handlers' own calls.
    """
    if _LOGGER.handlers and level is None:
        return
    level = (level or os.environ.get("TOTESYS_LOG_LEVEL") or "INFO").upper()
    _LOGGER.propagate = False
    terminal = [h for h in _LOGGER.handlers if not isinstance(h, _KeptHandler)]
    if terminal:
        for handler in terminal:
            handler.setLevel(level)
        _settle_level()
    else:
        _send_to(_JsonFormatter(), stream, level)


class _KeptHandler(logging.FileHandler):
    """The JSON lines a local command keeps under `.local/logs/` (what CloudWatch holds in AWS)."""


#: Under `.local/`: one file of JSON lines per UTC day, read by `totesys-etl logs`.
LOG_FOLDER = "logs"
#: How many UTC days of kept lines a machine keeps (CloudWatch's retention plays this part in AWS).
RETENTION_VARIABLE = "TOTESYS_LOG_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30
_DAY_FILE = re.compile(r"\d{4}-\d{2}-\d{2}\.jsonl")


def keep(home: Path, env: Mapping[str, str] | None = None) -> Path:
    """Also append every INFO line and above, as JSON, to today's file under `home/logs/`; its path.

    Whatever the terminal shows (nothing, readable progress, JSON), the kept lines are the full
    JSON ones, so `totesys-etl logs` can filter them by stage, run and time afterwards. Days older
    than the retention (`TOTESYS_LOG_RETENTION_DAYS`, default 30) are deleted first, so a machine
    that ticks every few minutes for years does not fill its disk with them.
    """
    folder = home / LOG_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    today = datetime.now(timezone.utc).date()
    days = whole_number_setting(os.environ if env is None else env, RETENTION_VARIABLE, DEFAULT_RETENTION_DAYS, "days")
    prune(folder, today - timedelta(days=days - 1))
    path = folder / f"{today:%Y-%m-%d}.jsonl"
    handler = _KeptHandler(path, encoding="utf-8")
    handler.setFormatter(_JsonFormatter())
    handler.setLevel(logging.INFO)
    _LOGGER.addHandler(handler)
    _LOGGER.propagate = False
    _settle_level()
    return path


def prune(folder: Path, first_kept: date) -> list[Path]:
    """Delete the day files before `first_kept`; the paths deleted. Other files are never touched."""
    deleted = []
    for path in folder.glob("*.jsonl"):
        if _DAY_FILE.fullmatch(path.name) and path.stem < f"{first_kept:%Y-%m-%d}":
            path.unlink(missing_ok=True)
            deleted.append(path)
    return sorted(deleted)


def kept_lines(home: Path, since: datetime | None = None) -> Iterator[dict]:
    """The kept JSON lines, oldest first, from `since` on; a line that is not JSON is skipped."""
    folder = home / LOG_FOLDER
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    first_day = f"{since:%Y-%m-%d}" if since else ""
    after = since.isoformat(timespec="milliseconds") if since else ""  # the lines' own `time` format
    for path in files:
        if path.stem < first_day:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for text in f:
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if isinstance(line, dict) and str(line.get("time", "")) >= after:
                    yield line


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

    def debug(self, message: str, **fields) -> None:
        """What a person at a terminal and an alarm can do without (e.g. per file an idle sweep skips)."""
        self._log(logging.DEBUG, message, fields)

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
