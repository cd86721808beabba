"""Size limits on what a plan may ask for, and the one walk that measures parameters against them.

A plan is a few kilobytes; these limits are orders of magnitude above any real one and exist so that hostile
or mistaken input (an alias bomb, a multi-megabyte `--param`) is refused in milliseconds with a clear message
instead of writing hundreds of megabytes of plan.json and stalling the report (docs/plan.md, "Limits").
"""

from __future__ import annotations

from typing import Any

# orchestrator.yml (and a run folder's plan.json, read back by `rerun`).
MAX_PLAN_BYTES = 256 << 10  # 256 KiB: thousands of entries, and PyYAML (pure Python, for line marks) is slow
MAX_PLAN_JSON_BYTES = 64 << 20  # 64 MiB: plan.json repeats each step's parameters
# The parameters of one layer (defaults, an entry, a notebook's metadata, --param) and of one step, as JSON:
# papermill writes them into a code cell, so this is already a very long cell.
MAX_PARAMETERS_BYTES = 256 << 10  # 256 KiB
# All steps' parameters together: what plan.json, the report and every pipeline definition repeat.
MAX_PLAN_PARAMETERS_BYTES = 16 << 20  # 16 MiB
# Retries after a transient failure (a kernel that did not start): more than a handful only delays the error.
MAX_RETRIES = 10


def json_size(value: Any, limit: int) -> int:
    """About how many bytes `value` takes as JSON, counting no further than just past `limit` (so a huge value
    costs no more than a small one). Shared objects (YAML aliases) count every time they appear, as in JSON."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 3
        elif isinstance(item, dict):
            total += 2 + len(item)
            for key, child in item.items():
                total += len(str(key)) + 4
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            total += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += min(item.bit_length() // 3 + 2, limit + 1)  # no str(): it is slow past 4,300 digits
        else:
            total += 6
    return total


def too_big(what: str, limit: int) -> str:
    return f"{what} take more than {show_bytes(limit)} as JSON; pass large data as a file the notebook reads"


def show_bytes(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"
