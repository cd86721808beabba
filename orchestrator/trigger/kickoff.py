"""kick_off on Azure ML (the Function and the worker; docs/architecture.md#ways-in way in 1, docs/architecture.md#queue-messages).

In this order, each step safe to repeat when the message comes back after a crash:
1. ask DevOps whether the task is still open (as crank does, docs/devops-protocol.md#consuming-messages): a cancelled job starts nothing;
2. dedupe: the pipeline job's name comes from (PlanId, JobId, TaskInstanceId); when a job with that name
   exists, the pipeline was submitted by an earlier delivery, and nothing is submitted again (dedupe.py);
3. fetch the repository at the commit and load its plan with the message's `only` and `parameters`;
4. compile and validate the pipeline offline (a plan Azure ML would refuse is refused here, job closed);
5. put the job token in Key Vault under a name derived from the ids, for the report node (docs/architecture.md#secrets-policy);
6. schedule the first wrap_up check (watchdog.py): before submitting, so that a pipeline never runs
   unwatched; a check that finds no pipeline yet waits for it (ORCHESTRATOR_SUBMIT_GRACE_S);
7. submit, under the deterministic name (idempotent: azureml/submit.py);
8. post the studio link to the job's live feed (best effort).
The message is completed by the front end only after all of that returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.live import LiveReporter
from orchestrator.devops.taskclient import CANCELLED_RESULTS, TaskClient
from orchestrator.trigger import watchdog
from orchestrator.trigger.dedupe import azureml_job_name
from orchestrator.trigger.intake import Accepted, routing_properties
from orchestrator.trigger.messages import KickOff
from orchestrator.trigger.outcome import Outcome, completed
from orchestrator.trigger.planning import check_source, fetch_plan
from orchestrator.trigger.secret_store import secret_name_for
from orchestrator.trigger.services import Services

log = logging.getLogger("orchestrator.trigger")

# The secret outlives the watchdog by a day: a rerun from studio soon after may still publish (azureml.md).
SECRET_EXTRA_LIFE = timedelta(days=1)


def kick_off(accepted: Accepted, services: Services) -> Outcome:
    from orchestrator.azureml.client import get_client
    from orchestrator.azureml.names import redact_url
    from orchestrator.azureml.submit import azure_errors, find_job, studio_url, submit_job

    message, context = accepted.message, accepted.context
    assert isinstance(message, KickOff) and context is not None and context.task is not None
    settings = services.settings
    vault = settings.require_key_vault()   # an operator's mistake: refused before any work
    services.signing_key()                 # the same: the watchdog's checks could not be signed
    source = check_source(message, services)
    key = context.task.key
    name = azureml_job_name(key)

    client = get_client(services.workspace_options())
    with azure_errors(f"looking up pipeline job {name}"):
        existing = find_job(client, name)
    if existing is not None:
        log.info("key=%s job=%s exists already: a redelivered kick_off, not submitted again", key, name)
        post_studio_link(context, name, studio_url(existing), again=True)
        return completed(f"pipeline {name} exists already for this DevOps task: not submitted again",
                         run_status="submitted")
    disposition = task_disposition(context, services)
    if disposition.closed:
        return completed(f"nothing started: {disposition.closed}")

    with fetch_plan(message, context, services, source) as fetched:
        secret = secret_name_for(key)
        options = _compile_options(message, context, fetched.folder, fetched.commit, redact_url(message.repository.url),
                                   run_key=name, vault=vault, secret=secret, services=services,
                                   callback=disposition.callback)
        job = _compile(fetched.plan, options)
        now = services.now()
        services.get_secrets().put(secret, context.token.reveal(),
                                   expires_on=now + timedelta(seconds=settings.watchdog_max_age_s) + SECRET_EXTRA_LIFE)
        first = watchdog.check_message(
            key=key, check=1, started_at=now, plan=fetched.plan, context_body=message.body_for_context(),
            properties=routing_properties(context), callback=disposition.callback)
        services.schedule(first, now + timedelta(seconds=settings.watchdog_interval_s))
        submitted = submit_job(client, job, key=key)
    post_studio_link(context, submitted.name, submitted.studio_url, again=not submitted.created)
    return completed(f"pipeline {submitted.name} submitted ({len(fetched.plan.steps)} notebooks, commit "
                     f"{fetched.commit[:12]}): {submitted.studio_url or 'no studio link'}", run_status="submitted")


def _compile_options(message: KickOff, context: DevOpsContext, folder: Any, commit: str, repository: str, *,
                     run_key: str, vault: str, secret: str, services: Services, callback: bool = True) -> Any:
    from orchestrator.azureml.compile import CompileOptions

    build = message.build
    tags = {"devops.plan": context.task.plan_id if context.task else ""}
    if build is not None and build.id is not None:
        tags["devops.build"] = str(build.id)
    return CompileOptions(
        # The reuse key: a new DevOps job runs every notebook; a studio clone keeps it and reuses (azureml.md).
        run_key=run_key,
        cache_dir=services.settings.snapshot_dir or folder.parent / "snapshots",
        repository=repository,
        commit=commit,
        display_name=f"{message.repository.ref or commit[:12]} build {build.number}" if build and build.number else None,
        # Names only, never the token (docs/architecture.md#secrets-policy): the report node reads the secret by this name.
        # With `properties` the report node closes the server task; without (waitForCompletion: false) it
        # publishes the test run only (azureml/devops_hook.py).
        devops={"key_vault_url": vault, "token_secret": secret, "properties": routing_properties(context),
                "body": message.body_for_context()} if callback else
               {"key_vault_url": vault, "token_secret": secret, "collection_url": context.collection_url,
                "project": context.project, "build_id": str(message.build.id) if message.build and
                message.build.id is not None else None},
        report_identity=services.settings.report_identity,
        tags=tags,
    )


def _compile(plan: Any, options: Any) -> Any:
    from orchestrator.azureml.compile import compile_plan
    from orchestrator.azureml.submit import azure_errors
    from orchestrator.azureml.validation import validate
    from orchestrator.errors import InvalidInputError
    from orchestrator.trigger.outcome import Refused

    try:
        with azure_errors("building the pipeline"):
            job = compile_plan(plan, options)
            validate(job)
    except InvalidInputError as exc:
        raise Refused("Azure ML would refuse this plan's pipeline", [str(p) for p in exc.problems]) from None
    return job


@dataclass(frozen=True)
class Disposition:
    """What the DevOps task's record says to do with a kick_off."""

    callback: bool = True          # a server task waits for our TaskCompleted
    closed: str | None = None      # why nothing is to be started (the job was cancelled, or ended)


NO_CALLBACK = ("the DevOps task was already completed (succeeded) when its kick_off arrived: the pipeline sends it "
               "with `waitForCompletion: false`, so the notebooks run and their test run is published, but no "
               "TaskCompleted is sent (nothing waits for one)")


def task_disposition(context: DevOpsContext, services: Services) -> Disposition:
    """Run with a callback (the task is open), run without one (`waitForCompletion: false`: the task completed
    itself, succeeded, as soon as it sent the message), or start nothing (the job was cancelled or ended).
    When DevOps cannot be read, the work goes on: closing the job later matters more than this early look
    (docs/devops-protocol.md#consuming-messages)."""
    client = TaskClient(context, services.devops_policy)
    try:
        state = client.state_if_known(otherwise="going on")
    finally:
        client.close()
    if state is None:
        return Disposition()
    if (state.task_completed and state.task_result in ("succeeded", "succeededwithissues")
            and state.job_result not in CANCELLED_RESULTS):
        log.warning(NO_CALLBACK)
        return Disposition(callback=False)
    if state.task_completed or state.job_completed:
        return Disposition(closed=state.describe())
    return Disposition()


def post_studio_link(context: DevOpsContext, name: str, url: str | None, *, again: bool = False) -> None:
    """One line on the job's live feed (docs/devops-protocol.md#live-feed): where to watch the notebooks run. Best effort."""
    reporter = LiveReporter(context, interval_s=0.0, task_started=not again)
    reporter.message(f"Azure ML pipeline {name}{' (submitted earlier)' if again else ''}: {url or 'no studio link'}")
    reporter.close()
