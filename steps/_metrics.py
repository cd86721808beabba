"""Metrics a notebook records, and the plan's expectations about them (docs/architecture.md#step-contract).

Metrics are read from the executed notebook's display outputs, so neither scrapbook nor microsoft/recommenders
needs to be installed where the orchestrator runs:
- scrapbook's `glue(name, value)` publishes `application/scrapbook.scrap.json+json` (or `...text+json` with the
  text encoder) whose payload is {"name", "data", "encoder", "version"} (nteract/scrapbook, scrapbook/api.py);
- recommenders' `store_metadata(name, value)` publishes `application/notebook_utils.json+json` with payload
  {"name", "data", "encoder"} (recommenders/utils/notebook_utils.py).

The rule grammar is the one `orchestrator validate` checks (orchestrator/plan/rules.py); it is repeated here
because a step depends on no orchestrator module (docs/architecture.md#parts-and-data-flow):
    <op> NUMBER            op: >=, <=, >, <, ==, !=
    NUMBER .. NUMBER       inclusive range, low <= high
    ~= NUMBER +- NUMBER    approximately equal, tolerance >= 0 (also written ±)
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

try:
    from .step_result import Expectation
except ImportError:  # imported by run_notebook.py run as a script
    from step_result import Expectation  # type: ignore[no-redef]

METRIC_MIME_TYPES = (
    "application/scrapbook.scrap.json+json",
    "application/scrapbook.scrap.text+json",
    "application/notebook_utils.json+json",
)
RULE_HINT = "a rule like '>= 0.9', '< 5', '0.8..1.0' or '~= 0.5 +- 0.01'"

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_COMPARISON = re.compile(rf"^(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>{_NUM})$")
_RANGE = re.compile(rf"^(?P<low>{_NUM})\s*\.\.\s*(?P<high>{_NUM})$")
_APPROX = re.compile(rf"^~=\s*(?P<value>{_NUM})\s*(?:\+-|±)\s*(?P<tolerance>{_NUM})$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}

Scalar = bool | int | float | str


class InvalidRule(ValueError):
    """An expectation rule that does not parse; the message names the metric and the rule."""


@dataclass(frozen=True)
class Rule:
    text: str
    test: Callable[[float], bool]

    def check(self, actual: Any) -> bool:
        number = _as_number(actual)
        return number is not None and self.test(number)


def parse_rule(text: str) -> Rule:
    """Parse one rule, or raise InvalidRule saying what was expected."""
    if not isinstance(text, str):
        raise InvalidRule(f"expected {RULE_HINT}, got {text!r}")
    rule = text.strip()
    if match := _COMPARISON.match(rule):
        compare, bound = _OPERATORS[match["op"]], float(match["value"])
        return Rule(rule, lambda actual: compare(actual, bound))
    if match := _RANGE.match(rule):
        low, high = float(match["low"]), float(match["high"])
        if not low <= high:
            raise InvalidRule(f"expected a range low..high with low <= high, got {text!r}")
        return Rule(rule, lambda actual: low <= actual <= high)
    if match := _APPROX.match(rule):
        target, tolerance = float(match["value"]), float(match["tolerance"])
        if not (tolerance >= 0 and math.isfinite(tolerance)):
            raise InvalidRule(f"expected a tolerance >= 0 after +-, got {text!r}")
        return Rule(rule, lambda actual: abs(actual - target) <= tolerance)
    raise InvalidRule(f"expected {RULE_HINT}, got {text!r}")


def parse_expectations(expect: Mapping[str, str]) -> dict[str, Rule]:
    """All rules, or InvalidRule for the first that does not parse (naming its metric)."""
    rules: dict[str, Rule] = {}
    for metric, text in expect.items():
        try:
            rules[metric] = parse_rule(text)
        except InvalidRule as exc:
            raise InvalidRule(f"invalid expectation for metric {metric!r}: {exc}") from None
    return rules


def check_expectations(rules: Mapping[str, Rule], metrics: Mapping[str, Any]) -> list[Expectation]:
    """One entry per rule; a metric the notebook never recorded, or recorded as anything but a number (a
    boolean, a string, a list: see `read_recorded`), fails its rule."""
    return [Expectation(metric=metric, rule=rule.text, actual=_shown(metrics.get(metric)),
                        ok=rule.check(metrics.get(metric)))
            for metric, rule in rules.items()]


def _shown(value: Any) -> Any:
    """The value as result.json keeps it: a glued data frame must not be copied into every report."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    text = json.dumps(value, default=str)
    return value if len(text) <= 200 else f"a {type(value).__name__} of {len(text)} characters as JSON"


def describe_misses(expectations: Iterable[Expectation]) -> str:
    """'accuracy = 0.85 does not satisfy >= 0.9; loss was not recorded'."""
    parts = []
    for entry in expectations:
        if entry.ok:
            continue
        if entry.actual is None:
            parts.append(f"{entry.metric} was not recorded (expected {entry.rule})")
        elif _as_number(entry.actual) is None:
            parts.append(f"{entry.metric} = {entry.actual!r} is not a number (expected {entry.rule})")
        else:
            parts.append(f"{entry.metric} = {entry.actual!r} does not satisfy {entry.rule}")
    return "; ".join(parts)


def read_metrics(cells: Iterable[Mapping[str, Any]]) -> dict[str, Scalar]:
    """Scalar metrics recorded in the outputs, in notebook order (a later record of a name wins)."""
    # Only scalars are metrics: a glued data frame or list is data for the notebook's readers, not a number
    # the report can chart.
    return {name: value for name, value in read_recorded(cells).items() if isinstance(value, (bool, int, float, str))}


def read_recorded(cells: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Every value recorded in the outputs, structured ones too (what an expectation is checked against, so
    that a list is reported as "not a number", not as never recorded)."""
    metrics: dict[str, Any] = {}
    for cell in cells:
        for output in cell.get("outputs") or ():
            if output.get("output_type") not in ("display_data", "execute_result", "update_display_data"):
                continue
            for mime in METRIC_MIME_TYPES:
                recorded = _recorded(output.get("data", {}).get(mime))
                if recorded is not None:
                    metrics[recorded[0]] = recorded[1]
    return metrics


def _recorded(payload: Any) -> tuple[str, Any] | None:
    if isinstance(payload, str):  # some front ends store JSON MIME bundles as text
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    if not isinstance(payload, Mapping):
        return None
    name, value = payload.get("name"), payload.get("data")
    if not isinstance(name, str) or value is None:
        return None
    return name, value


def _as_number(value: Any) -> float | None:
    """Numbers only: True is no 0.95, and neither is the string "0.95" (a rule on a metric recorded as text
    would pass or fail by accident of its spelling)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None
