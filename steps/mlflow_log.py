"""Log one notebook step to the Azure ML job's MLflow run: status, metrics, result.json, executed notebook.

Runs inside an Azure ML notebook node, after steps/run_notebook.py (called by steps/azureml_step.py).
Depends on the standard library and mlflow only, never on the orchestrator package (docs/architecture.md#parts-and-data-flow).

Inside an Azure ML job the tracking URI and the job's run are set up by the platform (MLFLOW_TRACKING_URI,
MLFLOW_RUN_ID; docs/azureml-sdk.md#learning-each-steps-outcome, docs/azureml-sdk.md#metrics-and-logs). This module logs to that run by id through `MlflowClient` and never
starts or ends a run: the job's status stays Azure ML's to set (a failed notebook fails the node).

What it logs is what the report node looks for (orchestrator/azureml/discover.py reads the same names):
- tags `orchestrator.step`, `orchestrator.notebook`, `orchestrator.status`, `orchestrator.run_key`;
- metrics: the notebook's own (glued) metrics, `nb_failed` (0/1) and `nb_seconds`;
- params: the papermill parameters, as JSON text;
- artifacts: `orchestrator/result.json` (and `kernel.log`), the executed notebook under `notebooks/`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

if __package__:  # imported as steps.mlflow_log
    from .step_result import StepResult, read_result_file
else:  # run as a script in the node: its folder is sys.path[0]
    from step_result import StepResult, read_result_file  # type: ignore[no-redef]

log = logging.getLogger("orchestrator.steps.mlflow_log")

STEP_TAG = "orchestrator.step"
NOTEBOOK_TAG = "orchestrator.notebook"
STATUS_TAG = "orchestrator.status"
RUN_KEY_TAG = "orchestrator.run_key"
PACK_TAG = "orchestrator.pack"  # on a packed node's run: the step ids it ran, comma-separated
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
RESULT_ARTIFACT_DIR = "orchestrator"
NOTEBOOK_ARTIFACT_DIR = "notebooks"
RUN_ID_VARIABLES = ("MLFLOW_RUN_ID", "AZUREML_RUN_ID")
# MLflow metric keys allow letters, digits, _ - . space : and /.
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]+")
_MAX_PARAM = 6000  # MLflow's limit on a param value's length
_BATCH = 900  # metrics per log_batch call (MLflow's limit is 1000)


def job_run_id() -> str | None:
    """The MLflow run of this Azure ML job (the job's run id), or None outside Azure ML."""
    for name in RUN_ID_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def metric_key(name: str) -> str:
    return _BAD_KEY.sub("_", name).strip() or "metric"


def numeric_metrics(result: StepResult) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, value in result.metrics.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[metric_key(str(name))] = float(value)
    metrics["nb_failed"] = 0.0 if result.status in ("passed", "skipped") else 1.0
    if result.duration_s is not None and math.isfinite(result.duration_s):
        metrics["nb_seconds"] = result.duration_s
    return metrics


def log_step(output_dir: Path, *, run_key: str | None = None, run_id: str | None = None) -> bool:
    """Log the step whose outputs are in `output_dir` to the job's MLflow run. True when all of it logged.

    Never raises: a logging failure must not change the step's outcome. The report then finds the node
    without its tags and reports it from the run's status alone.
    """
    run_id = run_id or job_run_id()
    if run_id is None:
        log.info("not in an Azure ML job (no MLFLOW_RUN_ID / AZUREML_RUN_ID): nothing logged to MLflow")
        return False
    result = read_result_file(output_dir)
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
    except Exception as exc:  # noqa: BLE001 - see the docstring: logging is best effort
        log.warning("could not log the step to MLflow: %s: %s", type(exc).__name__, exc)
        return False
    tags: dict[str, str] = {STATUS_TAG: result.status if result else "error"}
    if result:
        tags[STEP_TAG] = result.step
        tags[NOTEBOOK_TAG] = result.notebook
    if run_key:
        tags[RUN_KEY_TAG] = run_key
    # What the report needs comes first, each call on its own: the tags that identify the step and its
    # status, then result.json and the executed notebook. A refused call (a bad metric, a limit) loses that
    # call only, never the step's outcome.
    calls: list[tuple[str, Callable[[], object]]] = [
        (f"tag {key}", partial(client.set_tag, run_id, key, value)) for key, value in tags.items()
    ]
    for name in ("result.json", "kernel.log"):  # kernel.log: the runner's record of the kernel's own output
        if (output_dir / name).is_file():
            calls.append((name, partial(client.log_artifact, run_id, str(output_dir / name),
                                        artifact_path=RESULT_ARTIFACT_DIR)))
    for notebook in sorted(output_dir.glob("*.ipynb")):
        calls.append((notebook.name, partial(client.log_artifact, run_id, str(notebook),
                                             artifact_path=NOTEBOOK_ARTIFACT_DIR)))
    params = [
        Param(metric_key(str(k)), json.dumps(v)[:_MAX_PARAM]) for k, v in (result.parameters if result else {}).items()
    ][:100]
    if params:
        calls.append(("parameters", partial(client.log_batch, run_id, params=params)))
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in (numeric_metrics(result) if result else {}).items()]
    for start in range(0, len(metrics), _BATCH):
        chunk = metrics[start : start + _BATCH]
        calls.append(("metrics", partial(client.log_batch, run_id, metrics=chunk)))
    logged = True
    for what, call in calls:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - see the docstring: logging is best effort
            log.warning("could not log %s to MLflow: %s: %s", what, type(exc).__name__, exc)
            logged = False
    return logged


def tag_pack(steps: list[str], *, run_id: str | None = None) -> bool:
    """Mark this node's run as a pack of `steps`: the report looks for their runs among its children."""
    run_id = run_id or job_run_id()
    if run_id is None:
        return False
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient().set_tag(run_id, PACK_TAG, ",".join(steps)[:_MAX_PARAM])
    except Exception as exc:  # noqa: BLE001 - best effort, as log_step
        log.warning("could not tag the pack's MLflow run: %s: %s", type(exc).__name__, exc)
        return False
    return True


def log_child_step(output_dir: Path, *, run_key: str | None = None, name: str = "",
                   parent_run_id: str | None = None) -> bool:
    """Log one notebook of a packed node to an MLflow run of its own, a child of the node's run, with the
    same tags and artifacts as a notebook node's run (log_step); ended FINISHED when the notebook passed or
    was skipped, FAILED otherwise. Never raises."""
    parent = parent_run_id or job_run_id()
    if parent is None:
        log.info("not in an Azure ML job: the packed notebook is not logged to MLflow")
        return False
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        experiment_id = client.get_run(parent).info.experiment_id
        child = client.create_run(experiment_id, tags={PARENT_TAG: parent, RUN_NAME_TAG: name or output_dir.name})
    except Exception as exc:  # noqa: BLE001
        log.warning("could not start an MLflow child run: %s: %s", type(exc).__name__, exc)
        return False
    logged = log_step(output_dir, run_key=run_key, run_id=child.info.run_id)
    result = read_result_file(output_dir)
    status = "FINISHED" if result is not None and result.status in ("passed", "skipped") else "FAILED"
    try:
        client.set_terminated(child.info.run_id, status=status)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not end the MLflow child run: %s: %s", type(exc).__name__, exc)
    return logged


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path, help="The step's output folder (result.json, executed notebook)")
    parser.add_argument("--run-key", default=None)
    parser.add_argument("--run-id", default=None, help="MLflow run id (default: MLFLOW_RUN_ID or AZUREML_RUN_ID)")
    args = parser.parse_args(argv)
    log_step(args.output_dir, run_key=args.run_key, run_id=args.run_id)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
