"""Every error_kind a Lambda handler can log gets its own alarm (tf/locals.tf `error_kinds`)."""
import re
from pathlib import Path

from totesys_etl import errors, quarantine
from totesys_etl.ingest.cdc import run as cdc_run  # its errors subclass EtlError; SLOT_LAG is a line's kind

TF_LOCALS = Path(__file__).resolve().parents[2] / "tf" / "locals.tf"
#: Kinds only the command line meets (its own services, a tick's wait, the bench), and ProcessFailed,
#: whose runs were each logged under their own kind before it is raised (never logged itself).
NOT_IN_LAMBDA = {"local_services", "tick_incomplete", "bench_failed", "process_failed"}


def _kinds_in_code() -> set[str]:
    classes, seen = [errors.EtlError], set()
    while classes:
        cls = classes.pop()
        seen.add(cls.error_kind)
        classes += cls.__subclasses__()
    held = {quarantine.QUARANTINED_FILE, quarantine.QUARANTINED_MANIFEST, quarantine.QUARANTINED_ROWS,
            cdc_run.SLOT_LAG}
    return (seen | held) - NOT_IN_LAMBDA


def test_every_error_kind_the_handlers_log_has_an_alarm():
    block = re.search(r"error_kinds\s*=\s*\[(.*?)\]", TF_LOCALS.read_text(), re.S).group(1)
    alarmed = set(re.findall(r'"([a-z_]+)"', block))
    assert _kinds_in_code() - alarmed == set()
    assert {"quarantined_rows", "run_id_collision"} <= _kinds_in_code()
