"""Fan-out: without one configured, the caller handles the parts itself; a bad setting is one line."""
import os

import pytest

from totesys_etl.errors import ConfigurationError, ProcessFailed
from totesys_etl.events import PartRequest
from totesys_etl import fanout
from totesys_etl.fanout import fan_out

REQUEST = PartRequest("20261124T071248780573Z", "sales_order", 0)


def test_without_a_fan_out_the_caller_handles_its_parts():
    assert fan_out("process", [REQUEST], env={}) is False
    assert fan_out("process", [], env={"TOTESYS_FANOUT": "anything"}) is False


def test_an_unknown_fan_out_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="TOTESYS_FANOUT='carrier-pigeon'"):
        fan_out("load", [REQUEST], env={"TOTESYS_FANOUT": "carrier-pigeon"})


def test_a_local_part_that_fails_fails_the_stage_after_the_others_ran(aws, monkeypatch):
    """Each part is the stage's real handler in a child process; one that fails (here, no such
    bucket) is the stage's failure, named, once every part has run."""
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", "no-such-ingested-bucket")
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", "no-such-processed-bucket")
    env = {**os.environ, "TOTESYS_FANOUT": "local", "TOTESYS_FANOUT_WORKERS": "2"}
    requests = [PartRequest(REQUEST.run_id, "sales_order", p) for p in range(3)]
    with pytest.raises(ProcessFailed, match=r"3 part\(s\) of run 20261124T071248780573Z failed: sales_order part 0"):
        fan_out("process", requests, env=env)


def test_the_lambda_fan_out_needs_the_function_it_runs_in():
    with pytest.raises(ConfigurationError, match="AWS_LAMBDA_FUNCTION_NAME"):
        fan_out("process", [REQUEST], env={"TOTESYS_FANOUT": "lambda"})
    with pytest.raises(ValueError):
        fan_out("ingest", [REQUEST], env={"TOTESYS_FANOUT": "local"})


def test_a_run_is_handled_whole_up_to_the_whole_run_rows_and_a_bad_setting_is_one_line():
    assert fanout.handles_whole(fanout.DEFAULT_WHOLE_RUN_ROWS, {})
    assert not fanout.handles_whole(fanout.DEFAULT_WHOLE_RUN_ROWS + 1, {})
    assert fanout.handles_whole(10, {fanout.WHOLE_RUN_ROWS_VARIABLE: "10"})
    assert not fanout.handles_whole(11, {fanout.WHOLE_RUN_ROWS_VARIABLE: "10"})
    with pytest.raises(ConfigurationError, match="TOTESYS_WHOLE_RUN_ROWS must be a whole number"):
        fanout.handles_whole(1, {fanout.WHOLE_RUN_ROWS_VARIABLE: "lots"})
