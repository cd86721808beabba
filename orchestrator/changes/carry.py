"""Results carried from the run history for the notebooks a selection needs but did not select.

A selected notebook needs the notebooks it comes `after` to have passed (and their step folders, which it
reads). When one of them is unchanged since the merge base, its result at the base is as good as a new
one: it is carried over, with its files, from the newest run in the history that
- ran this plan folder at the merge base's commit,
- passed that notebook with the same code and parameters it has now (the history's code id: a run made
  from a working tree with uncommitted edits does not count),
- and still has its run folder under .orchestrator/runs/ (the history keeps outcomes, not files).
Anything else runs again. A history that cannot be read only means running more.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.backends import CarriedResult
from orchestrator.changes.selection import Selection
from orchestrator.plan.spec import ResolvedPlan, StepSpec
from orchestrator.run_folder import DEFAULT_RUNS_DIR, step_dir
from steps.step_result import StepResult

log = logging.getLogger("orchestrator.changes")


@dataclass(frozen=True)
class Carried:
    results: dict[str, CarriedResult]  # step id -> the result kept, its files, the run it comes from
    notes: tuple[str, ...]  # one line per prerequisite: carried from which run, or why it runs


def carry_from_history(plan: ResolvedPlan, selection: Selection, *, runs_dir: Path = DEFAULT_RUNS_DIR,
                       store: Any = None) -> Carried:
    from orchestrator.history import HistoryStore

    needed = [item.notebook for item in selection.not_selected if item.runs_for]
    if not needed or not selection.base:
        return Carried({}, ())
    steps = {step.notebook: step for step in plan.steps}
    try:
        history = (store or HistoryStore()).notebook_history(root=str(plan.root), notebooks=needed)
    except Exception as error:  # noqa: BLE001 - any sqlite trouble: run the notebooks instead
        log.warning("run history not read (%s): the notebooks selected ones come after run again", error)
        return Carried({}, tuple(f"{notebook}: runs (the run history cannot be read)" for notebook in needed))
    results: dict[str, CarriedResult] = {}
    notes = []
    for notebook in needed:
        step = steps[notebook]
        found = _from_history(step, history.get(notebook, []), selection.base, plan.root, runs_dir)
        if found is None:
            notes.append(f"{notebook}: runs (no passing run of this code at {selection.base[:12]} in the history)")
            continue
        results[step.id] = found
        notes.append(f"{notebook}: carried over from run {found.origin} (passed at {selection.base[:12]})")
    return Carried(results, tuple(notes))


def _from_history(step: StepSpec, past: list[Any], base: str, root: Path, runs_dir: Path) -> CarriedResult | None:
    code = _current_code(root / step.notebook, step)
    for run in past:  # newest first
        record = run.record
        if record.status != "passed" or run.commit != base or code is None or record.code_id != code:
            continue
        result = _passed_result(runs_dir / run.run_id, step.id)
        if result is not None:
            return CarriedResult(result, step_dir(runs_dir / run.run_id, step.id), run.run_id)
    return None


def _current_code(path: Path, step: StepSpec) -> str | None:
    from orchestrator.history.record import code_hash

    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells")
    except (OSError, ValueError, AttributeError):
        return None
    return code_hash(cells, step.parameters)


def _passed_result(run_dir: Path, step_id: str) -> StepResult | None:
    from orchestrator.errors import OrchestratorError
    from orchestrator.results import load_results

    if not step_dir(run_dir, step_id).is_dir():
        return None
    try:
        results = load_results(run_dir)
    except (OrchestratorError, OSError):
        return None
    result = results.step(step_id)
    return result if result is not None and result.passed else None
