"""Durations ("90s", "30m", "2h", "1h30m") and sizes ("2MB", "500kB") as written in orchestrator.yml.

A bare number is seconds (durations) or bytes (sizes), so a plan can say `timeout: 600` as well. Both
parsers raise ValueError with an "expected ..., got ..." message that the plan loader reports as is.
"""

from __future__ import annotations

import math
import re
from typing import Any

from orchestrator.plan.messages import show

DURATION_HINT = "a duration like 90s, 30m, 2h or a number of seconds"
SIZE_HINT = "a size like 500kB, 2MB or a number of bytes"

_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
# Units in a fixed order (d, h, m, s), each at most once: "1h30m" but never "30m1h" or "1m1m".
_DURATION = re.compile(
    rf"^(?:(?P<d>{_NUMBER})\s*d)?\s*(?:(?P<h>{_NUMBER})\s*h)?\s*"
    rf"(?:(?P<m>{_NUMBER})\s*m)?\s*(?:(?P<s>{_NUMBER})\s*s)?$"
)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}

_SIZE = re.compile(rf"^(?P<n>{_NUMBER})\s*(?P<unit>[a-z]*)$")
# Decimal units as storage vendors and the default "2MB" (= 2_000_000, StepSpec's default) mean them;
# binary ones for people who think in MiB.
_UNIT_BYTES = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip


def _is_number(value: Any) -> bool:
    # bool is an int in Python, but `timeout: true` is a mistake, not one second.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value: Any) -> float:
    """Seconds in a duration; strictly positive."""
    seconds: float | None = None
    if _is_number(value):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        else:
            match = _DURATION.match(text)
            if match and text and any(match.groupdict().values()):
                seconds = sum(float(n) * _UNIT_SECONDS[u] for u, n in match.groupdict().items() if n)
    if seconds is None:
        raise ValueError(f"expected {DURATION_HINT}, got {show(value)}")
    if not (seconds > 0 and math.isfinite(seconds)):  # NaN and .inf would not survive plan.json
        raise ValueError(f"expected a finite duration greater than zero, got {show(value)}")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes in a size; strictly positive."""
    size: float | None = None
    if _is_number(value):
        size = float(value)
    elif isinstance(value, str):
        match = _SIZE.match(value.strip().lower())
        if match and match["unit"] in _UNIT_BYTES:
            size = float(match["n"]) * _UNIT_BYTES[match["unit"]]
    if size is None:
        raise ValueError(f"expected {SIZE_HINT}, got {show(value)}")
    if not (size >= 1 and math.isfinite(size)):
        raise ValueError(f"expected a finite size of at least one byte, got {show(value)}")
    return int(size)
