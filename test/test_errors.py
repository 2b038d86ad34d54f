"""`errors.parse_json`: JSON from outside, whose every way of failing is the caller's bad-input error."""
import json
import sys
from decimal import Decimal

import pytest

from totesys_etl.errors import FxUnavailable, InvalidInput, parse_json

#: Far deeper than CPython's JSON decoder descends, whatever its version's limit; 100 KB at most.
DEEP = 50_000
NESTED = {"arrays": b"[" * DEEP, "objects": b'{"a":' * DEEP, "closed": b"[" * DEEP + b"]" * DEEP,
          "inside a manifest": b'{"run_id": "x", "files": {"t": ' + b"[" * DEEP + b"]" * DEEP + b"}}"}
LIMIT = sys.getrecursionlimit()


@pytest.mark.parametrize("body", NESTED.values(), ids=NESTED)
def test_nesting_too_deep_to_decode_is_bad_input_not_a_recursion_error(body):
    with pytest.raises(RecursionError):
        json.loads(body)  # what an `except ValueError` lets through
    with pytest.raises(InvalidInput, match=r"^manifest _runs/x\.json is nested too deep to decode$"):
        parse_json(body, "manifest _runs/x.json")
    # Nothing is left broken: the limit is as it was, and Python recursion and decoding still work.
    assert sys.getrecursionlimit() == LIMIT
    assert _depth(LIMIT // 2) == LIMIT // 2
    assert parse_json(b"[" * 100 + b"]" * 100, "x") == _nested_list(100)


def _depth(n: int) -> int:
    return 0 if n == 0 else 1 + _depth(n - 1)


def _nested_list(n: int) -> list:
    value: list = []
    for _ in range(n - 1):
        value = [value]
    return value


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not JSON: Expecting property name"),
    (b'{"a": "\xff"}', "not JSON: 'utf-8' codec can't decode byte 0xff"),
    (b"", "not JSON: Expecting value"),
])
def test_syntax_and_encoding_errors_are_bad_input_with_the_decoder_s_reason(body, reason):
    with pytest.raises(InvalidInput, match=f"^the body is {reason}"):
        parse_json(body, "the body")


def test_the_caller_chooses_its_error_and_the_decoder_s_options():
    with pytest.raises(FxUnavailable, match="nested too deep"):
        parse_json(b"[" * DEEP, "the page", FxUnavailable)
    with pytest.raises(ValueError, match="not JSON") as caught:
        parse_json(b"[1,", "the page", ValueError)
    assert type(caught.value) is ValueError  # the caller's own, nothing more specific
    assert parse_json('{"rate": 1.10}', "the page", parse_float=Decimal) == {"rate": Decimal("1.10")}
    assert parse_json(b'{"a": [1, {"b": null}]}', "x") == {"a": [1, {"b": None}]}
