import io
import json
import logging
import subprocess
import sys
import types
from datetime import datetime, timedelta, timezone

import pytest

from totesys_etl import logs
from totesys_etl.config import Settings
from totesys_etl.errors import ConfigurationError


def test_log_lines_are_json_with_stage_run_and_error_kind():
    logs.configure("INFO")
    stream = io.StringIO()
    handler = logs.logging.StreamHandler(stream)
    handler.setFormatter(logs._JsonFormatter())
    logs._LOGGER.addHandler(handler)
    try:
        log = logs.StageLog("load").bind(run_id="r1")
        log.info("loaded", rows=3)
        log.error("failed", "load_failed")
    finally:
        logs._LOGGER.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "INFO" and first["stage"] == "load" and first["run_id"] == "r1" and first["rows"] == 3
    assert second["level"] == "ERROR" and second["error_kind"] == "load_failed"


def test_crash_point_exits_137_only_at_its_point():
    code = "from totesys_etl.faults import crash_point; crash_point('load.after_commit'); crash_point('{}')"
    env = {"TOTESYS_CRASH_AT": "ingest.before_manifest", "PATH": ""}
    assert subprocess.run([sys.executable, "-c", code.format("x")], env=env).returncode == 0
    assert subprocess.run([sys.executable, "-c", code.format("ingest.before_manifest")], env=env).returncode == 137


def test_settings_need_buckets_and_never_show_urls():
    with pytest.raises(ConfigurationError, match="TOTESYS_INGEST_BUCKET"):
        Settings.from_env({})
    settings = Settings.from_env({"TOTESYS_INGEST_BUCKET": "i", "TOTESYS_PROCESSED_BUCKET": "p",
                                  "TOTESYS_SOURCE_URL": "postgresql://u:s3cr3tpw@h/db"})
    assert settings.source.url and "s3cr3tpw" not in repr(settings)
    assert settings.warehouse.secret_id == "postgres_db_credentials"
    assert settings.source.secret_id == "totesys_db_credentials"


def test_failures_are_logged_once_with_their_kind_and_reraised():
    from botocore.exceptions import ClientError

    from totesys_etl.errors import SourceUnavailable

    stream = io.StringIO()
    handler = logs.logging.StreamHandler(stream)
    handler.setFormatter(logs._JsonFormatter())
    logs.configure("INFO")
    logs._LOGGER.addHandler(handler)
    already = SourceUnavailable("already said")
    already.logged = True
    s3_error = ClientError({"Error": {"Code": "AccessDenied"}}, "PutObject")
    try:
        for error in (SourceUnavailable("source database 'x' at h:1 is unavailable: refused"), s3_error,
                      ValueError("bad\nsecond line"), already):
            with pytest.raises(type(error)):
                with logs.failures_logged(logs.StageLog("load"), "load"):
                    raise error
    finally:
        logs._LOGGER.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["error_kind"], line["message"]) for line in lines] == [
        ("source_unavailable", "load failed: source database 'x' at h:1 is unavailable: refused"),
        ("lake_unavailable", "load failed: S3 PutObject: AccessDenied"),
        ("pipeline_failed", "load failed: bad"),
    ]


def test_lambda_lines_carry_the_request_id_and_whether_the_container_was_cold(monkeypatch):
    monkeypatch.setattr(logs, "_cold", True)
    context = types.SimpleNamespace(aws_request_id="8f5e-req-1", function_name="ingest")
    first = logs.lambda_fields(context)
    second = logs.lambda_fields(types.SimpleNamespace(aws_request_id="8f5e-req-2"))
    assert first == {"request_id": "8f5e-req-1", "cold_start": True}
    assert second == {"request_id": "8f5e-req-2", "cold_start": False}
    assert logs.lambda_fields(None) == {}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs._JsonFormatter())
    logs._LOGGER.addHandler(handler)
    logs._LOGGER.setLevel(logging.INFO)  # whatever an earlier test left (conftest restores it after)
    try:
        logs.StageLog("ingest", **second).info("hello")
    finally:
        logs._LOGGER.removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["request_id"] == "8f5e-req-2" and line["cold_start"] is False and line["stage"] == "ingest"


def test_kept_log_days_older_than_the_retention_are_deleted_and_nothing_else(tmp_path):
    folder = tmp_path / logs.LOG_FOLDER
    folder.mkdir()
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=n) for n in (0, 1, 2, 3, 40)]
    for day in days:
        (folder / f"{day:%Y-%m-%d}.jsonl").write_text("{}\n")
    (folder / "notes.jsonl").write_text("mine\n")
    path = logs.keep(tmp_path, env={"TOTESYS_LOG_RETENTION_DAYS": "3"})
    for handler in [h for h in logs._LOGGER.handlers if getattr(h, "baseFilename", None) == str(path)]:
        logs._LOGGER.removeHandler(handler)
        handler.close()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{d:%Y-%m-%d}.jsonl" for d in days[:3]] + ["notes.jsonl"])


@pytest.mark.parametrize("value", ["0", "-1", "a week", "1.5"])
def test_a_bad_log_retention_is_one_line(tmp_path, value):
    with pytest.raises(ConfigurationError, match="TOTESYS_LOG_RETENTION_DAYS must be a whole number"):
        logs.keep(tmp_path, env={"TOTESYS_LOG_RETENTION_DAYS": value})


@pytest.mark.parametrize("text, found", [(None, 7), ("", 7), ("1", 1), (" 12 ", 12)])
def test_a_whole_number_setting_takes_digits_or_its_default(text, found):
    from totesys_etl.config import whole_number_setting

    assert whole_number_setting({} if text is None else {"X": text}, "X", 7, "rows") == found


@pytest.mark.parametrize("text", ["0", "-3", "2.5", "1e3", "many", "x" * 100])
def test_a_bad_whole_number_setting_is_one_line_naming_its_unit(text):
    from totesys_etl.config import whole_number_setting

    with pytest.raises(ConfigurationError, match=r"^X must be a whole number of rows >= 1, not '.{0,40}'$"):
        whole_number_setting({"X": text}, "X", 7, "rows")
