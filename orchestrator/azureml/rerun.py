"""Rerun a finished pipeline job: the same graph, so Azure ML's reuse decides what runs again.

`--failed` keeps the original job's `run_key`: every notebook node that completed has identical inputs,
code and environment, so Azure ML reuses it, and the failed, cancelled and never-started nodes run again
(docs/azureml-sdk.md#reuse, docs/azureml-sdk.md#reruns). Without `--failed` the rerun gets a new run_key and everything runs.

The job is cloned from the workspace (`jobs.get`), not recompiled from a checkout: a recompiled snapshot
that differs by one file would change every node's reuse hash. This is what studio's Clone + Submit does.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timezone
from typing import Any

from orchestrator.azureml import collect
from orchestrator.azureml.compile import REPORT_NODE
from orchestrator.azureml.components import RUN_KEY
from orchestrator.azureml.submit import Submitted, azure_errors, find_job, submit_job
from orchestrator.errors import InvalidInputError, Problem

log = logging.getLogger("orchestrator.azureml")



def input_value(inputs: Any, name: str) -> Any:
    """The literal value of a job or node input (the SDK wraps it: PipelineInput/NodeInput._data)."""
    try:
        value = inputs[name]
    except (KeyError, TypeError, AttributeError):
        return None
    return getattr(value, "_data", value)


def new_run_key() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def report_inputs(job: Any) -> Any:
    """Where a job compiled here keeps what its report needs (`expected`, `title`, `devops`): its report node's
    inputs; for a job invoked from a published batch endpoint, which has no report node (orchestrator/azureml/
    publish.py), the pipeline job's own inputs. None for any other job."""
    nodes = getattr(job, "jobs", None) or {}
    if REPORT_NODE in nodes:
        return nodes[REPORT_NODE].inputs
    inputs = getattr(job, "inputs", None)
    return inputs if input_value(inputs, "expected") is not None else None


def expected_of(job: Any) -> list[collect.ExpectedStep]:
    """The steps a compiled job accounts for, from its report's `expected` input (report_inputs)."""
    inputs = report_inputs(job)
    if inputs is None:
        raise InvalidInputError([Problem(str(getattr(job, "name", "job")), "jobs",
                                         f"has no {REPORT_NODE} node: not a pipeline compiled by orchestrator")])
    return collect.decode_expected(str(input_value(inputs, "expected")))


def _resubmission_class() -> Any:
    from azure.ai.ml.entities import PipelineJob

    class Resubmission(PipelineJob):
        """A pipeline job whose request names the job it reruns: `sourceJobId` of the REST PipelineJob,
        which the SDK fills only for schedules (entities/_schedule/schedule.py); studio links the two."""

        source_job_id: str | None = None

        def _to_rest_object(self) -> Any:
            rest = super()._to_rest_object()
            if self.source_job_id:
                setattr(rest.properties, "source_job_id", self.source_job_id)  # noqa: B010 - not in the stubs
            return rest

    return Resubmission


def prepare_clone(original: Any, *, failed: bool, job_name: str) -> tuple[Any, str]:
    """The job to resubmit, and its run_key.

    Built afresh from what the orchestrator itself set when compiling (the graph, the report output, the
    settings, its tags, display name and experiment), never the fetched job resubmitted as it is: that one
    carries the service's system properties and read-only fields, and azure-ai-ml's own comments say a job
    fetched with `jobs.get` and sent back fails its round trip for pipelines
    (operations/_job_operations.py, create_or_update)."""
    from azure.ai.ml import Output
    from azure.ai.ml.entities import PipelineJobSettings

    run_key = input_value(original.inputs, RUN_KEY) if failed else None
    if failed and not run_key:
        raise InvalidInputError([Problem(job_name, "inputs.run_key", "the job has no run_key input to reuse")])
    key = str(run_key) if run_key else new_run_key()
    fetched = original.settings
    settings = PipelineJobSettings(
        continue_on_step_failure=getattr(fetched, "continue_on_step_failure", True) is not False,
        force_rerun=False,  # reuse is the point (docs/azureml-sdk.md#reuse)
    )
    finalize = getattr(fetched, "on_finalize", None)
    if finalize:
        settings.on_finalize = finalize
    label = original.display_name or job_name
    clone = _resubmission_class()(
        jobs=dict(original.jobs),
        inputs={RUN_KEY: key},
        outputs={name: Output(type="uri_folder", mode="rw_mount") for name in (original.outputs or {})},
        settings=settings,
        experiment_name=original.experiment_name,
        display_name=f"{label} (rerun{' of failed' if failed else ''})",
        description=original.description,
        tags={**dict(original.tags or {}), "rerun_of": job_name},  # the tags compile set (the service adds properties)
    )
    clone.source_job_id = getattr(original, "id", None)
    return clone, key


def rerun_job(client: Any, job_name: str, *, failed: bool, key: str | None = None) -> tuple[Submitted, str, list[collect.ExpectedStep]]:
    """Resubmit `job_name`; returns the submission, the run_key used, and the steps the job accounts for."""
    with azure_errors(f"reading job {job_name}"):
        original = find_job(client, job_name)
    if original is None:
        raise InvalidInputError([Problem(job_name, "", "no such job in the workspace")])
    expected = expected_of(original)
    clone, run_key = prepare_clone(original, failed=failed, job_name=job_name)
    submitted = submit_job(client, clone, key=key or f"{job_name}-rerun-{new_run_key()}")
    log.info("job=%s reruns %s run_key=%s failed_only=%s", submitted.name, job_name, run_key, failed)
    return submitted, run_key, expected
