"""Azure ML runs into the history, read from MLflow: what each notebook node logged there
(steps/mlflow_log.py: tags `orchestrator.step`, `orchestrator.notebook`, `orchestrator.status`, metrics
`nb_seconds` and the notebook's own) and the pipeline run's tags (`commit`, `branch`, compile.py).

A pipeline run is the parent of its notebook runs; a packed notebook's run is a child of its pack's node
run, itself a child of the pipeline run. Works against any MLflow tracking server: the workspace's
(`az ml workspace show --query mlflow_tracking_uri`, with azureml-mlflow installed for its sign-in), or a
local one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.history.store import HistoryRun, NotebookOutcome

STEP_TAG = "orchestrator.step"  # the names steps/mlflow_log.py logs (tests check they agree)
NOTEBOOK_TAG = "orchestrator.notebook"
STATUS_TAG = "orchestrator.status"
PACK_TAG = "orchestrator.pack"
PARENT_TAG = "mlflow.parentRunId"
OWN_METRICS = frozenset({"nb_seconds", "nb_failed"})  # added by mlflow_log, not the notebook's
PASSING = frozenset({"passed", "skipped"})


def _all_runs(client: Any, experiment_id: str) -> Iterable[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _iso(millis: Any) -> str | None:
    if not isinstance(millis, (int, float)) or not millis:
        return None
    return datetime.fromtimestamp(millis / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def runs_from_mlflow(client: Any, experiment: str, *, root: str) -> list[HistoryRun]:
    """Every pipeline run of `experiment` that has notebook runs, as history entries of the plan folder
    `root` (where the history files them: the same notebooks run locally)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise InvalidInputError([Problem("--experiment", experiment, "no such MLflow experiment")])
    runs = {run.info.run_id: run for run in _all_runs(client, found.experiment_id)}
    by_pipeline: dict[str, list[Any]] = {}
    for run in runs.values():
        if not run.data.tags.get(STEP_TAG):
            continue
        parent = runs.get(run.data.tags.get(PARENT_TAG, ""))
        if parent is not None and parent.data.tags.get(PACK_TAG):
            parent = runs.get(parent.data.tags.get(PARENT_TAG, ""))  # a packed notebook: its pack's pipeline
        if parent is not None:
            by_pipeline.setdefault(parent.info.run_id, []).append(run)
    entries = []
    for pipeline_id, notebook_runs in by_pipeline.items():
        pipeline = runs[pipeline_id]
        notebooks = tuple(_outcome(run) for run in sorted(notebook_runs, key=lambda r: r.data.tags[STEP_TAG]))
        tags = pipeline.data.tags
        entries.append(HistoryRun(
            run_id=pipeline_id, root=root, experiment=experiment, backend="azureml",
            status="passed" if all(nb.status in PASSING for nb in notebooks) else "failed",
            started_at=_iso(pipeline.info.start_time) or "", finished_at=_iso(pipeline.info.end_time),
            commit=tags.get("commit"), branch=tags.get("branch"), notebooks=notebooks,
        ))  # fmt: skip
    return sorted(entries, key=lambda entry: entry.started_at)


def _outcome(run: Any) -> NotebookOutcome:
    tags, metrics = run.data.tags, run.data.metrics
    seconds = metrics.get("nb_seconds")
    return NotebookOutcome(
        step=str(tags[STEP_TAG]),
        notebook=str(tags.get(NOTEBOOK_TAG) or tags[STEP_TAG]),
        status=str(tags.get(STATUS_TAG) or "error"),
        duration_s=float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else None,
        attempts=1,  # not logged as a metric; result.json (an artifact) has it
        metrics={k: float(v) for k, v in metrics.items() if k not in OWN_METRICS and math.isfinite(v)},
    )
