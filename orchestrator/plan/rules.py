"""Syntax of expectation rules (`expect: {accuracy: ">= 0.9"}`), checked when the plan loads.

The step script evaluates the rules after the notebook ran (it depends on no orchestrator module, DESIGN 2);
checking the syntax here means a typo fails `orchestrator validate` instead of an hour-long run.
Grammar (spaces between tokens are optional):
    <op> NUMBER            op: >=, <=, >, <, ==, !=
    NUMBER .. NUMBER       inclusive range, low <= high
    ~= NUMBER +- NUMBER    approximately equal, tolerance >= 0 (also written ±)
"""

from __future__ import annotations

import math
import re
from typing import Any

from orchestrator.plan.messages import show

RULE_HINT = "a rule like '>= 0.9', '< 5', '0.8..1.0' or '~= 0.5 +- 0.01'"

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_COMPARISON = re.compile(rf"^(?:>=|<=|==|!=|>|<)\s*(?P<value>{_NUM})$")
_RANGE = re.compile(rf"^(?P<low>{_NUM})\s*\.\.\s*(?P<high>{_NUM})$")
_APPROX = re.compile(rf"^~=\s*(?P<value>{_NUM})\s*(?:\+-|±)\s*(?P<tolerance>{_NUM})$")
# The same grammar without named groups (ECMA-262 spells them differently), for the JSON Schema.
RULE_PATTERN = rf"^\s*(?:(?:>=|<=|==|!=|>|<)\s*{_NUM}|{_NUM}\s*\.\.\s*{_NUM}|~=\s*{_NUM}\s*(?:\+-|±)\s*{_NUM})\s*$"


def check_rule(rule: Any) -> str:
    """Return the rule, stripped, or raise ValueError saying what was expected."""
    if not isinstance(rule, str):
        # A bare number is ambiguous (at least? exactly?), so ask for the operator instead of guessing.
        raise ValueError(f"expected {RULE_HINT}, got {show(rule)}")
    text = rule.strip()
    if _COMPARISON.match(text):
        return text
    if match := _RANGE.match(text):
        low, high = float(match["low"]), float(match["high"])
        if not low <= high:
            raise ValueError(f"expected a range low..high with low <= high, got {show(rule)}")
        return text
    if match := _APPROX.match(text):
        tolerance = float(match["tolerance"])
        if not (tolerance >= 0 and math.isfinite(tolerance)):
            raise ValueError(f"expected a tolerance >= 0 after +-, got {show(rule)}")
        return text
    raise ValueError(f"expected {RULE_HINT}, got {show(rule)}")
