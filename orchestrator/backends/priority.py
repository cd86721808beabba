"""Which ready notebook starts first: the one heading the longest remaining chain of work.

A notebook's rank is its expected duration plus the longest chain of notebooks that come after it
(critical-path list scheduling). Started in that order, a one-hour notebook is never picked last, and a
chain of long notebooks is begun early enough that it does not decide the run's length on its own. With no
durations known at all, ranks keep the plan's order.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from orchestrator.plan.spec import ResolvedPlan

# A notebook never measured counts as a typical one: the median of those that were.
_UNKNOWN_WHEN_NOTHING_KNOWN = 1.0


def ranks(plan: ResolvedPlan, expected: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """step id -> sort key, smallest first: (-critical path seconds, plan position)."""
    known = [seconds for step_id, seconds in expected.items() if seconds > 0]
    typical = statistics.median(known) if known else _UNKNOWN_WHEN_NOTHING_KNOWN
    dependants: dict[str, list[str]] = {step.id: [] for step in plan.steps}
    for step in plan.steps:
        for dep in step.after:
            dependants.setdefault(dep, []).append(step.id)
    chain: dict[str, float] = {}
    for step in reversed(plan.steps):  # the plan lists every step after its `after` steps
        tail = max((chain[nxt] for nxt in dependants[step.id] if nxt in chain), default=0.0)
        chain[step.id] = expected.get(step.id, typical) + tail
    if not known:
        return {step.id: (0.0, index) for index, step in enumerate(plan.steps)}
    return {step.id: (-chain[step.id], index) for index, step in enumerate(plan.steps)}
