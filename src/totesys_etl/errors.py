"""Errors the pipeline raises on purpose, each with the `error_kind` its alarm counts (contract §6),
the one translation of S3's and the drivers' errors into them, and the one parser of JSON that comes
from outside (`parse_json`), whose every failure is its caller's bad-input error.

Messages never hold credentials: they name *which* service failed and why, nothing more.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator


class EtlError(Exception):
    """Base class: a failure with a one-line reason and an alarm kind."""

    error_kind = "pipeline_failed"
    exit_code = 1


class ConfigurationError(EtlError):
    """A setting is missing or malformed (exit 2)."""

    error_kind = "configuration"
    exit_code = 2


class SourceUnavailable(EtlError):
    """The totesys source database cannot be reached or refused the login."""

    error_kind = "source_unavailable"


class SourceSchemaChanged(EtlError):
    """A source table lacks a column the pipeline reads (dropped or renamed): that table stops, with
    its own alarm, until the column is back; every other table goes on (contract §2)."""

    error_kind = "source_schema_changed"


class WarehouseUnavailable(EtlError):
    """The warehouse database cannot be reached or refused the login."""

    error_kind = "warehouse_unavailable"


class LakeUnavailable(EtlError):
    """The S3 API failed."""

    error_kind = "lake_unavailable"


class RunIdCollision(EtlError):
    """Another ingest already wrote objects under this run id: two snapshots must never mix in one
    run (contract §4), so this one stops without a manifest and the next run reads its changes."""

    error_kind = "run_id_collision"


class SecretError(EtlError):
    """A Secrets Manager secret is missing or not the JSON contract §5 describes."""

    error_kind = "secret_invalid"


class InvalidInput(EtlError):
    """A file or manifest in the lake does not match its declaration: it goes to quarantine."""

    error_kind = "quarantined_file"


class ProcessFailed(EtlError):
    """One or more runs could not be processed (each was logged with its own error_kind)."""

    error_kind = "process_failed"
    runs_failed = "could not be processed"


class LoadFailed(EtlError):
    """A run could not be loaded into the warehouse."""

    error_kind = "load_failed"
    runs_failed = "not loaded"


class FxUnavailable(EtlError):
    """The FX rates API failed or answered with a body that is not the contract §9 shape: the FX part
    of the run stops at that day; the totesys tables of the run still ship."""

    error_kind = "fx_unavailable"


class LocalServicesError(EtlError):
    """The local runtime's own services (PostgreSQL, moto's server) cannot start or be found."""

    error_kind = "local_services"


class TickIncomplete(EtlError):
    """`tick` gave up waiting for runs that a concurrent holder kept locked."""

    error_kind = "tick_incomplete"


def parse_json(document: bytes | str, what: str, bad: Callable[[str], Exception] = InvalidInput, **options) -> Any:
    """JSON read from outside this process (an object in a bucket, an API's answer, a queued message)
    as Python values; `bad(reason)` raised, never anything else, when it cannot be decoded. `what`
    names it in the reason ("manifest _runs/….json is not JSON: …"); `options` go to `json.loads`.

    Decoding fails in three ways, and only two are ValueErrors: a syntax error (JSONDecodeError),
    bytes that are not UTF-8 (UnicodeDecodeError), and nesting deeper than the decoder goes, which
    is a RecursionError: `json.loads(b"[" * 5000)`, 5 KB, raises it, and an `except ValueError`
    lets it through, so a tiny object could stop a stage on every attempt. Catching RecursionError
    is sound here: CPython's C decoder (the `_json` scanner) raises it from its own depth check
    (`Py_EnterRecursiveCall`) before going deeper, and unwinds cleanly, with nothing half-built left
    behind and the interpreter's stack as it was; it says "this document nests too deep", not "this
    process is broken". MemoryError is not caught: it says the machine ran short (transient).
    """
    try:
        return json.loads(document, **options)
    except RecursionError:
        raise bad(f"{what} is nested too deep to decode") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise bad(f"{what} is not JSON: {e}") from None


def describe(error: BaseException) -> str:
    """One line saying why something failed, for logs and the command's exit line.

    S3 errors give the operation and S3's code, database errors the server's message (neither
    ever holds a credential), anything else its first line; never a traceback.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, ClientError):
        return f"S3 {error.operation_name}: {error.response.get('Error', {}).get('Code', 'error')}"
    if isinstance(error, BotoCoreError):
        return f"S3: {type(error).__name__}"
    detail = error.args[0] if error.args else None
    if isinstance(detail, dict):  # pg8000's DatabaseError: the server's fields
        return str(detail.get("M", "database error")).splitlines()[0]
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def kind_of(error: BaseException) -> str:
    """The `error_kind` a failure counts under: the pipeline's own, the lake's for S3 errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, (ClientError, BotoCoreError)):
        return LakeUnavailable.error_kind
    return getattr(error, "error_kind", EtlError.error_kind)


def is_missing(error: BaseException) -> bool:
    """True for S3's "no such object" (404 on HEAD, NoSuchKey on GET)."""
    from botocore.exceptions import ClientError

    return isinstance(error, ClientError) and \
        str(error.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


@dataclass
class LakeCall:
    """What a guarded S3 call learned: `missing` is True when the object did not exist (missing_ok)."""

    missing: bool = False


@contextmanager
def lake_errors(bucket: str, key: str = "", missing_ok: bool = False) -> Iterator[LakeCall]:
    """Turn botocore's errors inside the block into LakeUnavailable naming the bucket, the key and
    S3's error code (error_kind lake_unavailable).

    With `missing_ok`, a missing object is not an error: the block ends and `call.missing` is set.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    call = LakeCall()
    try:
        yield call
    except ClientError as e:
        if missing_ok and is_missing(e):
            call.missing = True
            return
        code = e.response.get("Error", {}).get("Code", "error")
        raise LakeUnavailable(f"s3://{bucket}/{key}: {code}") from None
    except BotoCoreError as e:
        raise LakeUnavailable(f"s3://{bucket}/{key}: {type(e).__name__}") from None
