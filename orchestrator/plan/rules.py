"""Syntax of expectation rules (`expect: {accuracy: ">= 0.9"}`), checked when the plan loads.

The step script evaluates the rules after the notebook ran (it depends on no orchestrator module, docs/architecture.md#parts-and-data-flow);
checking the syntax here means a typo fails `orchestrator validate` instead of an hour-long run.
Grammar (spaces between tokens are optional):
    <op> NUMBER            op: >=, <=, >, <, ==, !=
    NUMBER .. NUMBER       inclusive range, low <= high
    ~= NUMBER +- NUMBER    approximately equal, tolerance >= 0 (also written ±)
    <op> baseline [+|- NUMBER[%]]
                           relative to the metric's baseline: its value in the last run on the default branch
                           where the notebook passed (docs/history.md); resolved to a number before the run
"""

from __future__ import annotations

import math
import re
from typing import Any

from orchestrator.plan.messages import show

RULE_HINT = "a rule like '>= 0.9', '< 5', '0.8..1.0', '~= 0.5 +- 0.01' or '>= baseline - 0.02'"

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_COMPARISON = re.compile(rf"^(?:>=|<=|==|!=|>|<)\s*(?P<value>{_NUM})$")
_RANGE = re.compile(rf"^(?P<low>{_NUM})\s*\.\.\s*(?P<high>{_NUM})$")
_APPROX = re.compile(rf"^~=\s*(?P<value>{_NUM})\s*(?:\+-|±)\s*(?P<tolerance>{_NUM})$")
_RELATIVE = re.compile(
    rf"^(?P<op>>=|<=|==|!=|>|<)\s*baseline\s*(?:(?P<sign>[+-])\s*(?P<delta>{_NUM})\s*(?P<percent>%)?)?$"
)
# The same grammar without named groups (ECMA-262 spells them differently), for the JSON Schema.
RULE_PATTERN = (
    rf"^\s*(?:(?:>=|<=|==|!=|>|<)\s*{_NUM}|{_NUM}\s*\.\.\s*{_NUM}|~=\s*{_NUM}\s*(?:\+-|±)\s*{_NUM}"
    rf"|(?:>=|<=|==|!=|>|<)\s*baseline\s*(?:[+-]\s*{_NUM}\s*%?)?)\s*$"
)


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
    if _RELATIVE.match(text):
        return text
    if match := _APPROX.match(text):
        tolerance = float(match["tolerance"])
        if not (tolerance >= 0 and math.isfinite(tolerance)):
            raise ValueError(f"expected a tolerance >= 0 after +-, got {show(rule)}")
        return text
    raise ValueError(f"expected {RULE_HINT}, got {show(rule)}")


def is_relative(rule: str) -> bool:
    """Whether the rule compares with the baseline (and must be resolved before the step runs)."""
    return _RELATIVE.match(rule.strip()) is not None


def resolve_relative(rule: str, baseline: float) -> str:
    """'>= baseline - 0.02' with baseline 0.97 -> '>= 0.95'; '<= baseline + 10%' with 200 -> '<= 220'.
    The result is an absolute rule the step runner checks like any other."""
    match = _RELATIVE.match(rule.strip())
    if match is None:
        raise ValueError(f"expected a rule relative to the baseline, got {show(rule)}")
    delta = float(match["delta"] or 0.0)
    if match["percent"]:
        delta = abs(baseline) * delta / 100
    value = baseline + delta if match["sign"] == "+" else baseline - delta
    return f"{match['op']} {value:.10g}"
