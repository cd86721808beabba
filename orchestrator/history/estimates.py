"""How long each notebook is expected to take: the median of its recent measured runs, else the plan's
`expected_duration`. Used to start long notebooks first (local backend), to pack short ones onto shared
Azure ML nodes, and for the live view's estimate of the time left.
"""

from __future__ import annotations

import statistics
from orchestrator.history.store import HistoryStore
from orchestrator.plan.spec import ResolvedPlan

RECENT_RUNS = 5  # enough to ride out one slow run, few enough to follow a notebook that got slower
# A skipped notebook took no time; anything else that ran (passed or not) measured how long it runs.
_MEASURED = frozenset({"passed", "failed", "timed_out", "crashed", "error"})


def measured_durations(plan: ResolvedPlan, store: HistoryStore) -> dict[str, float]:
    """step id -> median seconds over its last runs in this plan folder; steps never measured are absent."""
    notebooks = [step.notebook for step in plan.steps]
    past = store.notebook_history(root=str(plan.root), notebooks=notebooks)
    found: dict[str, float] = {}
    for step in plan.steps:
        seconds = [
            run.record.duration_s
            for run in past.get(step.notebook, [])
            if run.record.status in _MEASURED and run.record.duration_s is not None
        ][:RECENT_RUNS]
        if seconds:
            found[step.id] = float(statistics.median(seconds))
    return found


def expected_durations(plan: ResolvedPlan, store: HistoryStore | None) -> dict[str, float]:
    """step id -> expected seconds: measured when the history has it, else the plan's expected_duration.
    Steps with neither are absent (their callers decide what unknown means)."""
    measured = measured_durations(plan, store) if store is not None else {}
    expected: dict[str, float] = {}
    for step in plan.steps:
        seconds = measured.get(step.id, step.expected_duration_s)
        if seconds is not None:
            expected[step.id] = seconds
    return expected
