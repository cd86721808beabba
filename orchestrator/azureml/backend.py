"""`orchestrator run --backend azureml`: submit the plan as one pipeline job; with --wait, follow it and
leave the same run folder as a local run (results.json, steps/<id>/, then the CLI builds junit and html)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from orchestrator.azureml import collect, watch
from orchestrator.azureml.client import WorkspaceOptions, get_client
from orchestrator.azureml.compile import CompileOptions, static_skips
from orchestrator.azureml.collect import ExpectedStep
from orchestrator.azureml.submit import Submitted, azure_errors, submit_plan
from orchestrator.backends import RunOptions, RunOutcome
from orchestrator.plan.spec import ResolvedPlan
from orchestrator.progress import Progress
from orchestrator.results import RESULTS_FILE, AzureMLJob, RunResults, utc_now, write_json_atomic
from orchestrator.run_folder import PLAN_FILE

log = logging.getLogger("orchestrator.azureml")

SUBMITTED = "submitted"  # RunOutcome.status without --wait: the CLI exits 0


class AzureMLBackend:
    name = "azureml"

    def __init__(self, workspace: WorkspaceOptions | None = None, *, key: str | None = None,
                 run_key: str | None = None, compile_options: CompileOptions | None = None,
                 poll_s: float = watch.POLL_S) -> None:
        self.workspace = workspace or WorkspaceOptions()
        self.key = key  # idempotency key (e.g. a trigger message's ids); default: the run id
        self.run_key = run_key  # reuse key; default: the run id, so every run executes every notebook
        self.compile_options = compile_options or CompileOptions()
        self.poll_s = poll_s

    def run(self, plan: ResolvedPlan, options: RunOptions, progress: Progress) -> RunOutcome:
        client = get_client(self.workspace)
        write_json_atomic(options.run_dir / PLAN_FILE, plan.to_json())
        compile_options = dataclasses.replace(self.compile_options, run_key=self.run_key or options.run_id,
                                              expected_durations=options.expected_durations)
        submitted = submit_plan(client, plan, key=self.key or options.run_id, options=compile_options)
        expected = collect.expected_entries(plan, static_skips(plan))
        return follow(client, submitted, options=options, progress=progress, expected=expected, title=plan.experiment,
                      run_key=compile_options.run_key, poll_s=self.poll_s)


def azureml_job(submitted: Submitted, run_key: str, status: str | None = None) -> AzureMLJob:
    return AzureMLJob(job_name=submitted.name, studio_url=submitted.studio_url, run_key=run_key, status=status,
                      submitted=submitted.created)


def job_tag(submitted: Submitted, name: str) -> str | None:
    """The job's commit and branch tags (compile.py) go to the run record too: the run history files runs by them."""
    value = (getattr(submitted.job, "tags", None) or {}).get(name)
    return value if isinstance(value, str) else None


def follow(client: Any, submitted: Submitted, *, options: RunOptions, progress: Progress,
           expected: Sequence[ExpectedStep], title: str, run_key: str, poll_s: float) -> RunOutcome:
    """After submission: either record the submission (no --wait) or wait and collect the run folder."""
    progress.message(f"Azure ML job {submitted.name}: {submitted.studio_url or '(no studio URL)'}")
    if not options.wait:
        results = RunResults(run_id=options.run_id, status=SUBMITTED, steps=[], backend="azureml", experiment=title,
                             started_at=utc_now(), azureml=azureml_job(submitted, run_key),
                             commit=job_tag(submitted, "commit"), branch=job_tag(submitted, "branch"))
        write_json_atomic(options.run_dir / RESULTS_FILE, results.to_json())
        return RunOutcome(status=SUBMITTED, results=results)
    started = time.monotonic()
    progress.run_started(options.run_id, len(expected), str(options.run_dir))
    try:
        with azure_errors(f"waiting for job {submitted.name}"):
            final = watch.wait(client, submitted.name, progress, expected=expected, poll_s=poll_s,
                               stop=lambda: options.stop.reason)
            results = watch.collect_run(client, submitted.name, Path(options.run_dir), expected=expected,
                                        run_id=options.run_id, title=title,
                                        azureml=azureml_job(submitted, run_key, status=final),
                                        commit=job_tag(submitted, "commit"), branch=job_tag(submitted, "branch"))
    except KeyboardInterrupt:
        progress.message(f"stopped waiting; job {submitted.name} keeps running in Azure ML: {submitted.studio_url}")
        raise
    progress.run_finished(results.status, results.counts, time.monotonic() - started)
    return RunOutcome(status=results.status, results=results)
