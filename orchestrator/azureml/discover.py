"""How the report node finds the notebook nodes of its pipeline at run time: MLflow sibling runs.

`settings.on_finalize` requires the report node to be isolated: it may not take the notebooks' outputs as
inputs (docs/azureml-sdk.md#on_finalize). So it discovers them. Of the options in docs/azureml-sdk.md#learning-each-steps-outcome this uses MLflow:

1. siblings: the runs whose `mlflow.parentRunId` is the report node's own parent, the pipeline run. That
   is the documented way to list a pipeline's child jobs from inside a job (how-to-track-experiments-mlflow.md),
   it needs no identity beyond the job's own token (MLClient would need a user or managed identity,
   docs/azureml-sdk.md#pitfalls), and each notebook node has already logged its result.json and executed notebook there
   (steps/mlflow_log.py), so nothing else needs reading;
2. reused nodes: a node Azure ML reuses from an earlier pipeline may not appear as a fresh sibling with its
   own artifacts [unverified on the service], so for steps still missing, the runs of the same experiment
   tagged with this pipeline's `run_key` are searched: a reused node is exactly a completed run of the same
   step with the same run_key (docs/azureml-sdk.md#reuse).

Steps found neither way never started; `collect` reports them as such.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from orchestrator.azureml.collect import CANCELLED, FAILED, FINISHED, NOT_STARTED, RUNNING, ExpectedStep, Finding
from steps.atomic import write_json_atomic
from steps.step_result import RESULT_FILE, StepResult

log = logging.getLogger("orchestrator.azureml")

# The names steps/mlflow_log.py logs (it cannot import this package; tests check the two agree).
STEP_TAG = "orchestrator.step"
RUN_KEY_TAG = "orchestrator.run_key"
PACK_TAG = "orchestrator.pack"  # a packed node's run; its notebooks' runs are its children (steps/azureml_pack.py)
RESULT_ARTIFACT = "orchestrator/result.json"
NOTEBOOK_ARTIFACT_DIR = "notebooks"
NODE_STEP_TAG = "step"  # the node tag set at compile time, in case a node never got to log its own
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
RUN_ID_VARIABLES = ("MLFLOW_RUN_ID", "AZUREML_RUN_ID")
# MLflow run status -> what `collect` makes of a node without result.json (how-to-track-experiments-mlflow.md:
# Completed -> FINISHED, Failed -> FAILED, Canceled -> KILLED, NotStarted/Queued/Preparing -> SCHEDULED).
STATES = {"FINISHED": FINISHED, "FAILED": FAILED, "KILLED": CANCELLED, "SCHEDULED": NOT_STARTED, "RUNNING": RUNNING}


@dataclass(frozen=True)
class StepRun:
    run_id: str
    status: str  # MLflow's: FINISHED, FAILED, KILLED, SCHEDULED, RUNNING
    start_time: int
    reused: bool = False  # found through run_key, not as a sibling


def own_run_id() -> str:
    for name in RUN_ID_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise LookupError("not inside an Azure ML job: neither MLFLOW_RUN_ID nor AZUREML_RUN_ID is set")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _search(client: Any, experiment_id: str, filter_string: str) -> Iterable[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _step_of(run: Any, ids: set[str], by_notebook: Mapping[str, str]) -> str | None:
    tags = run.data.tags
    for key in (STEP_TAG, NODE_STEP_TAG):
        if tags.get(key) in ids:
            return str(tags[key])
    # A node that failed before logging anything: Azure ML names its run after the node's display name,
    # the notebook path [unverified on the service], or after the node name.
    name = tags.get(RUN_NAME_TAG) or getattr(run.info, "run_name", None) or ""
    if name in by_notebook:
        return by_notebook[name]
    return name if name in ids else None


def _runs_with_key(client: Any, experiment_id: str, run_key: str) -> list[Any]:
    try:
        return list(_search(client, experiment_id, f"tags.{RUN_KEY_TAG} = {_quote(run_key)}"))
    except Exception as exc:  # noqa: BLE001 - a server that cannot search tags must not stop the report
        log.warning("searching runs by run_key failed: %s", exc)
        return []


def _newest_parent(keyed: Sequence[Any], own_run: str) -> str | None:
    """When the report's own run has no parent tag (never promised for the finalize node): the pipeline whose
    notebook runs with this run_key started last is this one. Earlier pipelines sharing the key (a rerun
    --failed) ended before this one began; their completed runs still count as reused."""
    latest: dict[str, int] = {}
    for run in keyed:
        parent = run.data.tags.get(PARENT_TAG)
        if parent and run.info.run_id != own_run:
            latest[parent] = max(latest.get(parent, 0), run.info.start_time or 0)
    if not latest:
        return None
    parent = max(latest, key=lambda p: latest[p])
    log.warning("the report run has no %s tag: taking %s, the newest pipeline with this run_key, as its parent",
                PARENT_TAG, parent)
    return parent


def unexplained(expected: Sequence[ExpectedStep], found: Mapping[str, Sequence[StepRun]]) -> list[str]:
    """Steps with no run that nothing explains: not skipped by the plan, and no step they come after was
    found ended without completing (then they never start). Under a lagging search these may yet appear."""
    missing = []
    for entry in expected:
        step = entry.step
        if entry.skip or step in found:
            continue
        blocked = any(found.get(dep) and found[dep][0].status != "FINISHED" for dep in entry.after)
        if not blocked:
            missing.append(step)
    return missing


def find_settled(client: Any, *, own_run: str, run_key: str | None, expected: Sequence[ExpectedStep],
                 parent_run: str | None = None, settle_s: float = 0.0, poll_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, list[StepRun]]:
    """find_step_runs, searched again for up to `settle_s` seconds while a step's run is missing without a
    reason: a run's tags may reach the search index seconds after they were set (the `search-lag`
    assumption, docs/azureml.md), and a report built too early would call a finished notebook not started."""
    deadline = time.monotonic() + settle_s
    while True:
        found = find_step_runs(client, own_run=own_run, run_key=run_key, expected=expected, parent_run=parent_run)
        missing = unexplained(expected, found)
        if not missing or time.monotonic() >= deadline:
            if missing:
                log.info("no run found for %s after waiting %.0fs", ", ".join(missing), settle_s)
            return found
        log.info("no run found yet for %s; searching again", ", ".join(missing))
        sleep(poll_s)


def _sibling_runs(client: Any, experiment_id: str, parent: str) -> Iterable[Any]:
    """The pipeline's node runs, with each packed node's notebook runs (its children) after it."""
    for run in _search(client, experiment_id, f"tags.{PARENT_TAG} = {_quote(parent)}"):
        yield run
        if run.data.tags.get(PACK_TAG):
            yield from _search(client, experiment_id, f"tags.{PARENT_TAG} = {_quote(run.info.run_id)}")


def find_step_runs(client: Any, *, own_run: str, run_key: str | None, expected: Sequence[ExpectedStep],
                   parent_run: str | None = None) -> dict[str, list[StepRun]]:
    """Step id -> the MLflow runs that may hold that notebook node's outcome, best first: its sibling run
    in this pipeline (the latest, if a node ran twice), then completed runs with the same run_key and step
    (a reused node), latest first. Steps with no run at all are left out."""
    me = client.get_run(own_run)
    experiment_id = me.info.experiment_id
    ids = {e.step for e in expected if not e.skip}
    by_notebook = {e.notebook: e.step for e in expected}
    keyed = _runs_with_key(client, experiment_id, run_key) if run_key else []
    parent = parent_run or me.data.tags.get(PARENT_TAG) or _newest_parent(keyed, own_run)
    siblings: dict[str, list[StepRun]] = {}
    if parent:
        for run in _sibling_runs(client, experiment_id, parent):
            if run.info.run_id == own_run:
                continue
            step = _step_of(run, ids, by_notebook)
            if step is not None:
                siblings.setdefault(step, []).append(StepRun(run.info.run_id, run.info.status, run.info.start_time or 0))
    else:
        log.warning("the report run has no %s tag and no run carries this run_key yet: siblings cannot be listed",
                    PARENT_TAG)
    reused: dict[str, list[StepRun]] = {}
    taken = {r.run_id for candidates in siblings.values() for r in candidates} | {own_run}
    for run in keyed:
        step = run.data.tags.get(STEP_TAG)
        if step in ids and run.info.status == "FINISHED" and run.info.run_id not in taken:
            reused.setdefault(step, []).append(StepRun(run.info.run_id, run.info.status, run.info.start_time or 0, True))
    found: dict[str, list[StepRun]] = {}
    for step in sorted(ids):
        ordered = sorted(siblings.get(step, []), key=lambda r: -r.start_time)
        ordered += sorted(reused.get(step, []), key=lambda r: -r.start_time)
        if ordered:
            found[step] = ordered
    return found


def fetch_first(client: Any, runs: Sequence[StepRun], dest: Path) -> Finding:
    """The first of `runs` holding a result.json (its files downloaded into `dest`); else what the best
    run says about the node."""
    first: Finding | None = None
    for run in runs:
        finding = fetch(client, run, dest)
        if finding.result is not None:
            return finding
        first = first or finding
    if first is None:
        raise ValueError("fetch_first needs at least one run")
    return first


def fetch(client: Any, run: StepRun, dest: Path) -> Finding:
    """Download a node's result.json and executed notebook into `dest`; what is known about it."""
    dest.mkdir(parents=True, exist_ok=True)
    result = None
    where = f"MLflow run {run.run_id}" + (", reused" if run.reused else "")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = Path(client.download_artifacts(run.run_id, RESULT_ARTIFACT, scratch))
            data = json.loads(local.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                result = StepResult.from_json(data, step_id=dest.name)  # dest: <run folder>/steps/<step id>
                write_json_atomic(dest / RESULT_FILE, data)
        except Exception as exc:  # noqa: BLE001 - no artifact is a finding, not an error
            log.info("run %s has no readable %s (%s)", run.run_id, RESULT_ARTIFACT, type(exc).__name__)
        try:
            for item in client.list_artifacts(run.run_id, NOTEBOOK_ARTIFACT_DIR):
                if not item.is_dir:
                    local = Path(client.download_artifacts(run.run_id, item.path, scratch))
                    (dest / local.name).write_bytes(local.read_bytes())
        except Exception as exc:  # noqa: BLE001
            log.info("run %s: executed notebook not downloaded (%s)", run.run_id, type(exc).__name__)
    return Finding(state=STATES.get(run.status, FAILED), result=result, where=where)
