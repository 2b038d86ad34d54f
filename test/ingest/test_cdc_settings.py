"""TOTESYS_SOURCE_MODE and the CDC settings (contract §10): defaults, and refusals with exit 2."""
from __future__ import annotations

import pytest

from totesys_etl.errors import ConfigurationError
from totesys_etl.ingest.cdc.settings import CdcSettings, source_mode
from totesys_etl.ingest.handler import lambda_handler


def test_poll_is_the_default_and_cdc_switches():
    assert source_mode({}) == "poll" and source_mode({"TOTESYS_SOURCE_MODE": ""}) == "poll"
    assert source_mode({"TOTESYS_SOURCE_MODE": " CDC "}) == "cdc"
    assert CdcSettings.from_env({}) == CdcSettings("totesys_etl", "totesys_etl", 1024 << 20, 200_000)
    assert CdcSettings.from_env({"TOTESYS_CDC_MAX_LAG_MB": "5", "TOTESYS_CDC_SLOT": "s_1"}).max_lag_bytes == 5 << 20


@pytest.mark.parametrize("env", [{"TOTESYS_SOURCE_MODE": "wal2json"}, {"TOTESYS_CDC_SLOT": "Bad-Name"},
                                 {"TOTESYS_CDC_PUBLICATION": "x'; DROP TABLE staff; --"},
                                 {"TOTESYS_CDC_SLOT": "s" * 64}, {"TOTESYS_CDC_MAX_LAG_MB": "0"},
                                 {"TOTESYS_CDC_MAX_CHANGES": "lots"}])
def test_a_bad_setting_is_refused_with_exit_2(env):
    with pytest.raises(ConfigurationError) as refused:
        source_mode(env)
        CdcSettings.from_env(env)
    assert refused.value.exit_code == 2


def test_the_handler_refuses_an_unknown_mode_before_touching_anything(monkeypatch, buckets):
    monkeypatch.setenv("TOTESYS_INGEST_BUCKET", buckets[0])
    monkeypatch.setenv("TOTESYS_PROCESSED_BUCKET", buckets[1])
    monkeypatch.setenv("TOTESYS_SOURCE_MODE", "logical")
    with pytest.raises(ConfigurationError, match="TOTESYS_SOURCE_MODE must be poll or cdc"):
        lambda_handler({})
