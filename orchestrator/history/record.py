"""A run folder -> one history entry: what `orchestrator run` records when a run ends, and what
`orchestrator history import` reads from older run folders.

Everything comes from the folder itself (results.json, plan.json, the executed notebooks), so recording
now and importing later give the same entry.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.history.store import HistoryRun, NotebookOutcome
from orchestrator.results import load_results
from orchestrator.run_folder import PLAN_FILE, step_dir
from steps.step_result import StepResult

# Runs that did not finish: nothing about them is worth remembering (`--no-wait` submissions, runs still
# going when imported).
UNFINISHED = frozenset({"submitted", "running"})
INJECTED_TAG = "injected-parameters"  # papermill's cell; its text is the parameters, hashed separately


def run_from_folder(run_dir: Path) -> HistoryRun:
    """The history entry of the run in `run_dir`. Raises InvalidInputError when it is not a finished run."""
    results = load_results(run_dir)
    if results.status in UNFINISHED:
        raise InvalidInputError([Problem(str(run_dir), "results.json", f"the run is {results.status}, not finished")])
    root = results.root or _plan_root(run_dir)
    if root is None or results.run_id == "unknown":
        raise InvalidInputError([Problem(str(run_dir), "results.json", "expected run_id and the plan's root")])
    # A repair run's carried-over results were measured by the run it repairs, which holds them already.
    notebooks = tuple(_outcome(run_dir, step) for step in results.steps if step.carried_over_from is None)
    return HistoryRun(
        run_id=results.run_id,
        root=root,
        experiment=results.experiment or Path(root).name,
        backend=results.backend or "local",
        status=results.status,
        started_at=results.started_at or "",
        finished_at=results.finished_at,
        commit=results.commit,
        branch=results.branch,
        notebooks=notebooks,
    )


def _plan_root(run_dir: Path) -> str | None:
    try:
        plan = json.loads((run_dir / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    root = plan.get("root") if isinstance(plan, dict) else None
    return root if isinstance(root, str) else None


def _outcome(run_dir: Path, step: StepResult) -> NotebookOutcome:
    return NotebookOutcome(step=step.step, notebook=step.notebook, status=step.status, duration_s=step.duration_s,
                           attempts=step.attempts or 0, metrics=numeric_metrics(step.metrics),
                           code_id=code_id(run_dir, step))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def numeric_metrics(metrics: Any) -> dict[str, float]:
    """The metrics a trend can be drawn of: finite numbers (true/false count as 1/0)."""
    if not isinstance(metrics, dict):
        return {}
    return {str(name): float(value) for name, value in metrics.items() if _finite(value) or isinstance(value, bool)}


def code_id(run_dir: Path, step: StepResult) -> str | None:
    """A hash of what the notebook ran: its code cells (read from the executed notebook, so an import
    long after the run still sees the code of the time) and its parameters. Two runs with the same id ran
    the same code; a notebook whose status changes between them is flaky."""
    name = step.output_notebook
    if name is None or not name.endswith(".ipynb") or "/" in name or "\\" in name:
        return None
    try:
        notebook = json.loads((step_dir(run_dir, step.step) / name).read_text(encoding="utf-8"))
        cells = notebook["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return code_hash(cells, step.parameters)


def code_hash(cells: Any, parameters: Any) -> str:
    """The code id of notebook cells run with `parameters` (papermill's injected cell left out): the same for
    an executed notebook and the notebook it was executed from (orchestrator/changes/carry.py)."""
    digest = hashlib.sha256()
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        if INJECTED_TAG in ((cell.get("metadata") or {}).get("tags") or []):
            continue
        source = cell.get("source", "")
        digest.update(("".join(source) if isinstance(source, list) else str(source)).encode("utf-8") + b"\0")
    digest.update(json.dumps(parameters or {}, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()[:16]
