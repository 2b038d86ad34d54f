"""Fan-out: without one configured, the caller handles the parts itself; a bad setting is one line."""
import pytest

from totesys_etl.errors import ConfigurationError
from totesys_etl.events import PartRequest
from totesys_etl.fanout import fan_out

REQUEST = PartRequest("20261124T071248780573Z", "sales_order", 0)


def test_without_a_fan_out_the_caller_handles_its_parts():
    assert fan_out("process", [REQUEST], env={}) is False
    assert fan_out("process", [], env={"TOTESYS_FANOUT": "anything"}) is False


def test_an_unknown_fan_out_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="TOTESYS_FANOUT='carrier-pigeon'"):
        fan_out("load", [REQUEST], env={"TOTESYS_FANOUT": "carrier-pigeon"})
