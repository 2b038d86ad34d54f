"""Errors the pipeline raises on purpose, each with the `error_kind` its alarm counts (SPEC §6).

Messages never hold credentials: they name *which* service failed and why, nothing more.
"""


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


class WarehouseUnavailable(EtlError):
    """The warehouse database cannot be reached or refused the login."""

    error_kind = "warehouse_unavailable"


class LakeUnavailable(EtlError):
    """The S3 API failed."""

    error_kind = "lake_unavailable"


class SecretError(EtlError):
    """A Secrets Manager secret is missing or not the JSON SPEC §5 describes."""

    error_kind = "secret_invalid"


class InvalidInput(EtlError):
    """A file or manifest in the lake does not match its declaration: it goes to quarantine."""

    error_kind = "quarantined_file"


class LoadFailed(EtlError):
    """A run could not be loaded into the warehouse."""

    error_kind = "load_failed"


class TickIncomplete(EtlError):
    """`tick` gave up waiting for runs that a concurrent holder kept locked."""

    error_kind = "tick_incomplete"
