"""Fault points (contract §6): `TOTESYS_CRASH_AT=<point>` ends the process at once, exit 137.

The check is one dictionary lookup when unset. "The first time" is per process: the local
runtime runs the handlers in its own process, so the command ends with 137 too.
"""
import os

POINTS = ("ingest.before_manifest", "ingest.after_manifest", "process.before_manifest",
          "process.after_manifest", "load.before_commit", "load.after_commit")


def crash_point(point: str) -> None:
    """Exit with 137 (as SIGKILL would) if `TOTESYS_CRASH_AT` names this point."""
    if os.environ.get("TOTESYS_CRASH_AT") == point:
        os._exit(137)
