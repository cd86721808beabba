"""Expectations hold numbers to rules: a boolean or a numeric string is not a number, and a recorded value
that is not a number is said to be one, not "not recorded"."""

from __future__ import annotations

from typing import Any

import pytest

from steps._metrics import check_expectations, describe_misses, parse_rule, read_metrics, read_recorded


def _glued(name: str, value: Any) -> dict[str, Any]:
    payload = {"name": name, "data": value, "encoder": "json", "version": 1}
    return {"outputs": [{"output_type": "display_data", "data": {"application/scrapbook.scrap.json+json": payload}}]}


@pytest.mark.parametrize("value", [True, "0.95", "1e3"])
def test_a_boolean_or_a_string_never_passes_a_numeric_rule(value: Any) -> None:
    [entry] = check_expectations({"accuracy": parse_rule(">= 0.9")}, {"accuracy": value})
    assert entry.ok is False
    assert describe_misses([entry]) == f"accuracy = {value!r} is not a number (expected >= 0.9)"


def test_numbers_are_checked() -> None:
    entries = check_expectations({"a": parse_rule(">= 0.9"), "b": parse_rule("0..1")}, {"a": 0.95, "b": 2})
    assert [e.ok for e in entries] == [True, False]
    assert describe_misses(entries) == "b = 2 does not satisfy 0..1"


def test_a_recorded_list_is_not_a_number_and_not_a_metric() -> None:
    cells = [_glued("accuracy", [0.9, 0.95]), _glued("loss", 0.1)]
    assert read_metrics(cells) == {"loss": 0.1}
    [entry] = check_expectations({"accuracy": parse_rule(">= 0.9")}, read_recorded(cells))
    assert describe_misses([entry]) == "accuracy = [0.9, 0.95] is not a number (expected >= 0.9)"
    [missing] = check_expectations({"f1": parse_rule(">= 0.9")}, read_recorded(cells))
    assert describe_misses([missing]) == "f1 was not recorded (expected >= 0.9)"
