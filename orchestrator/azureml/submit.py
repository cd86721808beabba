"""Submitting pipeline jobs, idempotently, and turning Azure's errors into the orchestrator's.

Idempotent: the caller's key (a trigger message's PlanId+JobId+TaskInstanceId, a run id, ...) becomes a
deterministic job name (`names.job_name_for_key`). Submitting looks that name up first and returns the job
that exists instead of starting a second one (docs/architecture.md#queue-messages: delivery is at least once). Two submitters racing
with the same key: the second create fails, finds the first's job, and returns it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

from orchestrator.azureml.compile import CompileOptions, compile_plan
from orchestrator.azureml.validation import validate
from orchestrator.azureml.names import job_name_for_key
from orchestrator.errors import InfrastructureError, InvalidInputError, Problem
from orchestrator.plan.spec import ResolvedPlan

log = logging.getLogger("orchestrator.azureml")


@dataclass(frozen=True)
class Submitted:
    name: str
    studio_url: str | None
    created: bool  # False: a job with this key existed already, and that one is returned
    job: Any


@contextlib.contextmanager
def azure_errors(doing: str) -> Iterator[None]:
    """Azure SDK exceptions -> InfrastructureError (exit 3) or InvalidInputError (exit 2), with what we were doing."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    try:
        yield
    except ClientAuthenticationError as exc:
        raise InfrastructureError(
            f"{doing}: Azure refused the credentials ({exc.message}); sign in with `az login`, or set "
            "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or use a managed identity"
        ) from None
    except ServiceRequestError as exc:
        raise InfrastructureError(f"{doing}: cannot reach Azure ML ({exc.message})") from None
    except HttpResponseError as exc:
        raise InfrastructureError(f"{doing}: Azure ML answered {exc.status_code}: {exc.message}") from None
    except Exception as exc:
        from azure.ai.ml.exceptions import ValidationException

        if isinstance(exc, ValidationException):
            raise InvalidInputError([Problem("pipeline", doing, str(exc))]) from None
        raise


def studio_url(job: Any) -> str | None:
    url = getattr(job, "studio_url", None)
    return str(url) if url else None


def find_job(client: Any, name: str) -> Any | None:
    """The job named `name`, or None when the workspace has none."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return client.jobs.get(name)
    except ResourceNotFoundError:
        return None


def _existing(job: Any, name: str, why: str) -> Submitted:
    """A job with the key's name is there already: it is the submission (one pipeline per key)."""
    log.info("job=%s %s", name, why)
    return Submitted(name=name, studio_url=studio_url(job), created=False, job=job)


def submit_job(client: Any, job: Any, *, key: str) -> Submitted:
    """Submit `job` under the name derived from `key`, unless a job with that name exists."""
    from azure.core.exceptions import HttpResponseError

    name = job_name_for_key(key)
    with azure_errors(f"submitting pipeline {name}"):
        existing = find_job(client, name)
        if existing is not None:
            return _existing(existing, name, f"exists already (key {key!r}): not submitted again")
        job.name = name
        try:
            # Validated offline already (validation.validate); the SDK would run the same validator again.
            created = client.jobs.create_or_update(job, experiment_name=job.experiment_name, skip_validation=True)
        except HttpResponseError:
            existing = find_job(client, name)
            if existing is None:
                raise
            return _existing(existing, name, f"was created concurrently by another submitter with key {key!r}")
    log.info("job=%s submitted experiment=%s", created.name, job.experiment_name)
    return Submitted(name=str(created.name), studio_url=studio_url(created), created=True, job=created)


def submit_plan(client: Any, plan: ResolvedPlan, *, key: str, options: CompileOptions | None = None) -> Submitted:
    """Compile, validate and submit `plan`; a key submitted before returns that job without compiling."""
    name = job_name_for_key(key)
    with azure_errors(f"looking up job {name}"):
        existing = find_job(client, name)
    if existing is not None:
        return _existing(existing, name, f"exists already (key {key!r}): not submitted again")
    job = compile_plan(plan, options)
    validate(job)
    return submit_job(client, job, key=key)
