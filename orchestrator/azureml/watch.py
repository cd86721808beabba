"""The client-side watcher: progress while the pipeline runs, and the backstop report when it ends.

Waiting polls the job and its child jobs (`jobs.get`, `jobs.list(parent_job_name=...)`) rather than
`jobs.stream`, which prints raw logs: polling turns child job states into the same progress events as a
local run. When the job ends, the run folder comes from the report node's output when it wrote one; if it
did not (on_finalize is preview: docs/azureml-sdk.md#on_finalize; or the report node itself failed), the backstop
downloads each notebook node's `result` output and builds the same run record here (docs/azureml-sdk.md#learning-each-steps-outcome, option 4).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from orchestrator.azureml import collect
from orchestrator.azureml.compile import REPORT_NODE
from orchestrator.azureml.components import PACK_OUTPUT, REPORT_OUTPUT, RESULT_OUTPUT
from orchestrator.errors import InfrastructureError
from orchestrator.progress import Progress
from orchestrator.results import AzureMLJob, RunResults
from steps.step_result import Status, StepResult, read_result_file

log = logging.getLogger("orchestrator.azureml")

POLL_S = 30.0
MAX_POLL_FAILURES = 10  # consecutive failed polls before giving up on waiting (the job keeps running)
TERMINAL = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
STARTED = frozenset({"Running", "Finalizing", "CancelRequested"})
# A child job's terminal status -> the status shown while waiting (the report reads result.json instead).
SHOWN: dict[str, Status] = {"Completed": "passed", "Failed": "failed", "Canceled": "error", "NotResponding": "error", "Paused": "error"}
STATE = {"Completed": collect.FINISHED, "Failed": collect.FAILED, "Canceled": collect.CANCELLED,
         "NotResponding": collect.FAILED, "Paused": collect.CANCELLED}
NAMED_OUTPUTS = "named-outputs"  # where jobs.download puts an output (azure/ai/ml/operations/_job_operations.py)


def step_of(child: Any, expected: Sequence[collect.ExpectedStep]) -> str | None:
    """The step id of a child job: by the node's `step` tag, else by its display name (the notebook)."""
    tags = getattr(child, "tags", None) or {}
    ids = {e.step for e in expected}
    if tags.get("step") in ids or tags.get("step") == REPORT_NODE:
        return str(tags["step"])
    display = getattr(child, "display_name", None)
    for entry in expected:
        if display in (entry.notebook, entry.step):
            return entry.step
    return REPORT_NODE if display == "report" else None


def node_steps(child: Any, expected: Sequence[collect.ExpectedStep]) -> list[tuple[str, str]]:
    """(step id, output holding its result folder) for each notebook a child job ran: one for a notebook
    node, several for a pack (its `pack` tag lists them in order, compile.py), none for the report."""
    tags = getattr(child, "tags", None) or {}
    ids = {e.step for e in expected}
    packed = [step for step in str(tags.get("pack") or "").split(",") if step]
    if packed:
        return [(step, PACK_OUTPUT.format(i)) for i, step in enumerate(packed) if step in ids]
    step = step_of(child, expected)
    return [] if step is None or step == REPORT_NODE else [(step, RESULT_OUTPUT)]


def children(client: Any, name: str) -> list[Any]:
    return [child for child in client.jobs.list(parent_job_name=name) if child is not None]


def wait(client: Any, name: str, progress: Progress, *, expected: Sequence[collect.ExpectedStep], poll_s: float = POLL_S,
         sleep: Callable[[float], None] = time.sleep, stop: Callable[[], str | None] | None = None) -> str:
    """Poll until the job ends; report child jobs starting and finishing. Returns the job's final status.

    `stop` (RunOptions.stop.reason): when it returns a reason, e.g. the DevOps job was cancelled, the
    pipeline job is cancelled and waited for, so the run folder still records how far it got.
    """
    notebooks = {e.step: e.notebook for e in expected}
    started: set[str] = set()
    finished: set[str] = set()
    failures = 0
    cancelled = False
    while True:
        reason = stop() if stop is not None else None
        if reason and not cancelled:
            cancelled = True
            progress.message(f"stopping ({reason}): cancelling Azure ML job {name}")
            try:
                client.jobs.begin_cancel(name)
            except Exception as exc:  # noqa: BLE001 - the job may have just ended; waiting shows it
                log.warning("cancelling job %s failed: %s", name, exc)
        try:
            status = str(client.jobs.get(name).status)
            kids = children(client, name)
            failures = 0
        except Exception as exc:  # noqa: BLE001 - a failed poll is retried; the job runs on regardless
            failures += 1
            if failures >= MAX_POLL_FAILURES:
                raise InfrastructureError(f"lost contact with Azure ML while waiting for job {name}: {exc}") from None
            log.warning("poll of job %s failed (%s); retrying", name, exc)
            sleep(poll_s)
            continue
        for child in kids:
            child_status = str(getattr(child, "status", ""))
            # A pack's notebooks are shown running while the pack runs (one at a time, in fact).
            for step, _output in node_steps(child, expected):
                if (child_status in STARTED or child_status in TERMINAL) and step not in started:
                    started.add(step)
                    progress.step_started(step, notebooks.get(step, step), 1)
                if child_status in TERMINAL and step not in finished:
                    finished.add(step)
                    progress.step_finished(StepResult(step=step, notebook=notebooks.get(step, step),
                                                      status=SHOWN.get(child_status, "error"), attempts=None))
        if status in TERMINAL:
            log.info("job=%s status=%s", name, status)
            return status
        sleep(poll_s)


def _download(client: Any, job_name: str, output: str, scratch: Path) -> Path | None:
    """jobs.download of one named output; the folder it landed in, or None when there is none."""
    try:
        client.jobs.download(job_name, download_path=str(scratch), output_name=output)
    except Exception as exc:  # noqa: BLE001 - a missing output is a finding, not an error
        log.info("job=%s output=%s not downloaded (%s)", job_name, output, exc)
        return None
    folder = scratch / NAMED_OUTPUTS / output
    return folder if folder.is_dir() else None


def copy_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, dirs_exist_ok=True)


def from_report_node(client: Any, name: str, run_dir: Path) -> RunResults | None:
    """The run folder the report node wrote, copied into `run_dir`; None when it wrote none."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = _download(client, name, REPORT_OUTPUT, Path(scratch))
        if folder is None or not (folder / "results.json").is_file():
            return None
        try:
            results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(results, dict) or not isinstance(results.get("steps"), list):
            return None
        copy_tree(folder, run_dir)
    return RunResults.from_json(results)


def backstop(client: Any, name: str, run_dir: Path, *, expected: Sequence[collect.ExpectedStep], run_id: str, title: str,
             azureml: AzureMLJob | None = None, reported_by: str = "backstop on the submitting machine") -> RunResults:
    """Build the run record here from each notebook node's own output (docs/azureml-sdk.md#learning-each-steps-outcome, option 4)."""
    findings: dict[str, collect.Finding] = {}
    for child in children(client, name):
        status = str(getattr(child, "status", ""))
        for step, output in node_steps(child, expected):
            result = None
            with tempfile.TemporaryDirectory() as scratch:
                folder = _download(client, str(child.name), output, Path(scratch))
                if folder is not None:
                    target = run_dir / "steps" / step
                    copy_tree(folder, target)
                    result = read_result_file(target, step_id=step)
            state = STATE.get(status, collect.NOT_STARTED if status not in STARTED else collect.RUNNING)
            findings[step] = collect.Finding(state=state, result=result, where=f"child job {child.name}")
    results = replace(collect.assemble(expected, findings, run_id=run_id, title=title, reported_by=reported_by),
                      azureml=azureml)
    collect.write(run_dir, results)
    return results


def collect_run(client: Any, name: str, run_dir: Path, *, expected: Sequence[collect.ExpectedStep], run_id: str,
                title: str, azureml: AzureMLJob, commit: str | None = None, branch: str | None = None) -> RunResults:
    """The finished job's run folder in `run_dir`: the report node's, or else the backstop's, with what this
    machine knows of the job."""
    results = from_report_node(client, name, run_dir)
    if results is None:
        log.warning("job=%s: the report node left no report; building it here from the notebooks' outputs", name)
        results = backstop(client, name, run_dir, expected=expected, run_id=run_id, title=title)
    results = replace(results, run_id=run_id, azureml=azureml, commit=commit or results.commit,
                      branch=branch or results.branch)
    collect.write(run_dir, results)
    return results
