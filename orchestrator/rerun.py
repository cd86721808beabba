"""Repair runs (Databricks' "repair run", docs/prior-art.md#repair-runs): rerun what did not pass, keep the rest.

A repair run reads the run folder it repairs: `plan.json` (the resolved plan that run used, so the repair
runs the same selection with the same settings) and `results.json` (what passed). Steps that did not pass
run again, and so does every step that comes after one of them; passed results are carried over with
their files, and the new run folder names the run it repairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.abandoned import settle_if_abandoned
from orchestrator.errors import InvalidInputError, Problem
from orchestrator.plan.spec import ResolvedPlan
from orchestrator.plan.stored import read_stored_plan
from orchestrator.results import INTERRUPTED_REASON, NOT_PASSED, load_results
from orchestrator.backends import CarriedResult
from orchestrator.run_folder import PLAN_FILE, is_live, read_holder, step_dir
from steps.step_result import StepResult


@dataclass(frozen=True)
class RepairPlan:
    plan: ResolvedPlan
    carried: dict[str, CarriedResult]  # step id -> result to keep, with its files in the repaired run
    rerun: tuple[str, ...]
    repairs: str  # the run id being repaired


def load_run_plan(run_dir: Path) -> ResolvedPlan:
    """plan.json of RUN_DIR, checked as strictly as orchestrator.yml (a notebook may have rewritten it)."""
    return read_stored_plan(run_dir / PLAN_FILE)


def plan_repair(run_dir: Path, *, failed_only: bool) -> RepairPlan:
    # A dead run's unfinished steps are recorded as interrupted first, so they are what --failed reruns.
    settle_if_abandoned(run_dir, by="rerun")
    results = load_results(run_dir)
    if results.status == "running" and is_live(run_dir):
        holder = read_holder(run_dir)
        raise InvalidInputError([Problem(str(run_dir), "", f"the run is still going ({holder or 'a live process'}); "
                                                          "rerun it once it has ended")])
    plan = load_run_plan(run_dir)
    previous = {step.step: step for step in results.steps}

    rerun: set[str] = set()
    for step in plan.steps:
        result = previous.get(step.id)
        if not failed_only or result is None or _did_not_run_to_completion(result):
            rerun.add(step.id)
    # Steps run in dependency order, so one pass propagates to every step downstream of a rerun.
    for step in plan.steps:
        if any(dep in rerun for dep in step.after):
            rerun.add(step.id)

    carried = {step_id: CarriedResult(result, step_dir(run_dir, step_id)) for step_id, result in previous.items()
               if step_id not in rerun and any(s.id == step_id for s in plan.steps)}
    ordered = tuple(step.id for step in plan.steps if step.id in rerun)
    return RepairPlan(plan=plan, carried=carried, rerun=ordered,
                      repairs=results.run_id if results.run_id != "unknown" else run_dir.name)


def _did_not_run_to_completion(result: StepResult) -> bool:
    status = result.status
    if status in NOT_PASSED:
        return True
    # A step skipped because the run was interrupted has not run yet. One skipped because a dependency did
    # not pass is rerun with that dependency (see plan_repair); one the plan skips, or a GPU step on a
    # machine without GPUs, stays skipped.
    return status == "skipped" and result.reason == INTERRUPTED_REASON
