"""Expectations relative to the baseline (`expect: {accuracy: ">= baseline - 0.02"}`), made absolute
before a run: the baseline is the metric's value in the last run on the default branch where the notebook
passed. The step runner then checks an ordinary rule (`>= 0.95`), on this machine or an Azure ML node alike,
and plan.json records the rule that was really applied.

A rule with no baseline yet (a new metric, no passing run on the default branch in the history) is not
checked in this run, and says so.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from orchestrator.history.store import HistoryStore, PastRun
from orchestrator.history.vcs import default_branch
from orchestrator.plan.rules import is_relative, resolve_relative
from orchestrator.plan.spec import ResolvedPlan, StepSpec

log = logging.getLogger("orchestrator.history")


def resolve_baselines(plan: ResolvedPlan, store: HistoryStore | None = None) -> tuple[ResolvedPlan, list[str]]:
    """The plan with every relative rule made absolute (or left out when it has no baseline), and one line
    per rule saying which it became and why."""
    relative = [step for step in plan.steps if any(is_relative(rule) for rule in step.expect.values())]
    if not relative:
        return plan, []
    main = default_branch(Path(plan.root))
    try:
        past = (store or HistoryStore()).notebook_history(
            root=str(plan.root), notebooks=[step.notebook for step in relative], branch=main
        )
    except Exception as error:  # noqa: BLE001 - an unreadable history leaves the rules unchecked, never fails the run
        log.warning("run history not read for baselines (%s)", error)
        past = {}
    notes: list[str] = []
    steps: dict[str, StepSpec] = {}
    for step in relative:
        baseline = next((run for run in past.get(step.notebook, []) if run.record.status == "passed"), None)
        expect: dict[str, str] = {}
        for metric, rule in step.expect.items():
            if not is_relative(rule):
                expect[metric] = rule
                continue
            value = baseline.record.metrics.get(metric) if baseline else None
            if value is None or baseline is None:
                notes.append(f"{step.notebook}: expect.{metric} {rule!r} not checked: {_why_none(baseline, main)}")
                continue
            expect[metric] = resolve_relative(rule, value)
            notes.append(f"{step.notebook}: expect.{metric} {rule!r} checked as {expect[metric]!r} "
                         f"(baseline {value:.6g} from run {baseline.run_id} on {main})")
        steps[step.id] = dataclasses.replace(step, expect=expect)
    resolved = dataclasses.replace(plan, steps=tuple(steps.get(step.id, step) for step in plan.steps))
    return resolved, notes


def _why_none(baseline: PastRun | None, main: str) -> str:
    if baseline is None:
        return f"no passing run on {main} in the run history yet"
    return f"the baseline run {baseline.run_id} on {main} did not record this metric"
