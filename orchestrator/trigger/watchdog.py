"""wrap_up: the watchdog that makes sure a submitted pipeline's DevOps job gets closed (docs/architecture.md#parts-and-data-flow, docs/architecture.md#queue-messages).

The pipeline's report node closes the job itself when all goes well. This check, scheduled every
ORCHESTRATOR_WATCHDOG_INTERVAL_S by the kick_off and then by itself, covers everything else:

| DevOps task | pipeline            | action                                                            |
|-------------|---------------------|-------------------------------------------------------------------|
| open        | running             | schedule the next check                                           |
| open        | not found yet       | wait (submit grace), then close the task as failed                |
| open        | finished            | the report node did not close it: build the report from the job's |
|             |                     | outputs here (azureml/watch.collect_run), publish it, close it    |
| completed   | running             | cancelled or timed out in DevOps (no one tells us, docs/devops-protocol.md#timeouts-token-lifetime-cancellation): |
|             |                     | cancel the pipeline (at once when the record says canceled, else  |
|             |                     | at the next check, so a report node that just closed it can end)  |
| completed   | finished / missing  | nothing more to do                                                |
| open        | running past max age| cancel the pipeline and close the task as failed                  |

Idempotent: every action is safe to repeat (cancelling a finished job does nothing; publishing checks the
task record first and sends at most one TaskCompleted), so a redelivered or duplicated check is harmless.
Time comes from `services.clock`, so tests drive every branch with a controllable clock.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.devops.context import DevOpsContext, ServerTask
from orchestrator.devops.http import DevOpsAuthError, DevOpsError
from orchestrator.devops.publish import close_server_task, report_to_devops
from orchestrator.devops.taskclient import CANCELLED_RESULTS, TaskClient, TaskState
from orchestrator.errors import InfrastructureError
from orchestrator.results import AzureMLJob
from orchestrator.trigger.dedupe import azureml_job_name
from orchestrator.trigger.intake import Accepted
from orchestrator.trigger.messages import WrapUp
from orchestrator.trigger.outcome import Outcome, completed
from orchestrator.trigger.scheduling import OutgoingMessage
from orchestrator.trigger.secret_store import secret_name_for
from orchestrator.trigger.services import Services
from orchestrator.trigger.signing import SIGNATURE_PROPERTY

log = logging.getLogger("orchestrator.trigger")



@dataclass(frozen=True)
class Watched:
    """What a wrap_up watches, derived from its (signed) routing properties alone, never from its body."""

    key: str            # PlanId/JobId/TaskInstanceId: the kick_off's dedupe key
    job_name: str       # the pipeline job's deterministic name (dedupe.azureml_job_name)
    token_secret: str   # the Key Vault secret holding the job token (secret_store.secret_name_for)

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> Watched:
        key = ServerTask.from_properties(properties).key
        return cls(key=key, job_name=azureml_job_name(key), token_secret=secret_name_for(key))


def check_message(*, key: str, check: int, started_at: datetime, plan: Any = None, expected: str | None = None,
                  title: str | None = None, context_body: dict[str, Any], properties: dict[str, str],
                  closing: bool = False, callback: bool = True) -> OutgoingMessage:
    """A wrap_up message (unsigned: Services.schedule signs it). The first is built from the plan; the next
    ones copy what the last one carried."""
    if expected is None:
        from orchestrator.azureml import collect
        from orchestrator.azureml.compile import static_skips

        # Always compressed (collect's "z:" form, which decode_expected reads): a plan of hundreds of notebooks
        # must not push a check past ORCHESTRATOR_MAX_BODY_BYTES, which the intake applies to every message.
        expected = collect.encode_expected(collect.expected_entries(plan, static_skips(plan)), always_compressed=True)
        title = plan.experiment
    body = WrapUp(job="wrap_up", version=2, check=check, started_at=started_at, expected=expected,
                  title=title or "notebooks", closing=closing, callback=callback, context_body=context_body)
    # Deterministic: a queue with duplicate detection drops a second copy of the same check.
    message_id = f"wrap-up-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:24]}-{check}"
    return OutgoingMessage(message_id=message_id, body=body.model_dump(mode="json"), properties=dict(properties))


def wrap_up(accepted: Accepted, services: Services) -> Outcome:
    message = accepted.message
    assert isinstance(message, WrapUp)
    now = services.now()
    age = (now - message.started_at).total_seconds()
    # The routing properties as received (no token, no signature): what the next check carries on.
    routing = {str(k): str(v) for k, v in accepted.properties.items()
               if str(k).lower() != "authtoken" and str(k) != SIGNATURE_PROPERTY}
    watched = Watched.from_properties(accepted.properties)
    outcome = _watch(message, watched, routing, services, now, age)
    if outcome.rescheduled_at is None:
        _forget_token(watched, services)
    return outcome


def _forget_token(watched: Watched, services: Services) -> None:
    """The chain ends here: the job is closed (or can no longer be), so its token leaves Key Vault now rather
    than lingering until someone reads the expiry label. Best effort: a failure is logged, not retried."""
    try:
        services.get_secrets().delete(watched.token_secret)
    except Exception as exc:  # noqa: BLE001 - Key Vault unreachable or a missing delete permission
        log.warning("devops token secret=%s not deleted (%s: %s); delete it by hand, its expiry is only a label",
                    watched.token_secret, type(exc).__name__, exc)


def _watch(message: WrapUp, watched: Watched, routing: dict[str, str], services: Services, now: datetime,
           age: float) -> Outcome:
    try:
        if not message.callback:
            return _pipeline_only(message, watched, routing, services, now, age)
        token = services.get_secrets().get(watched.token_secret)
        if not token:
            return completed(f"the job token is no longer in Key Vault ({watched.token_secret}): nothing left to watch")
        context = DevOpsContext.from_properties({**routing, "AuthToken": token}, message.context_body,
                                                where="wrap_up")
        return _check(message, watched, context, routing, services, now, age)
    except DevOpsAuthError as exc:
        return completed(f"watching stops: {exc}")
    except Exception as exc:  # noqa: BLE001 - Key Vault, Azure ML or DevOps unreachable: the chain itself retries
        if not isinstance(exc, (DevOpsError, InfrastructureError)):
            log.warning("wrap_up check %d failed", message.check, exc_info=True)
        if age > services.settings.watchdog_max_age_s:
            return completed(f"watching stops after {age / 3600:.0f} h; the last check failed: {exc}")
        return _next(message, watched, routing, services, now,
                     f"this check failed ({type(exc).__name__}: {exc}); trying again")


def _check(message: WrapUp, watched: Watched, context: DevOpsContext, routing: dict[str, str], services: Services,
           now: datetime, age: float) -> Outcome:
    from orchestrator.azureml.client import get_client
    from orchestrator.azureml.submit import azure_errors, find_job
    from orchestrator.azureml.watch import TERMINAL

    client = get_client(services.workspace_options())
    name = watched.job_name
    with azure_errors(f"looking up pipeline job {name}"):
        job = find_job(client, name)
    status = str(job.status) if job is not None else None
    state = _task_state(context, services)
    log.info("wrap_up job=%s check=%d pipeline=%s devops=%s age=%.0fs", name, message.check, status,
             state.describe(), age)

    if state.task_completed or state.job_completed:
        if status is None or status in TERMINAL:
            return completed(f"{state.describe()} and the pipeline is {status or 'absent'}: nothing left to do")
        if message.closing or _cancelled(state):
            _cancel(client, name)
            return completed(f"{state.describe()}: the job was cancelled or timed out, so pipeline {name} was cancelled")
        return _next(message, watched, routing, services, now, f"{state.describe()} while pipeline {name} is {status}; "
                     "it is cancelled at the next check unless it ends", closing=True)

    if status is None:
        if age < services.settings.submit_grace_s:
            return _next(message, watched, routing, services, now, f"pipeline {name} not found yet")
        _close(context, services, [f"The pipeline {name} was never submitted ({age / 60:.0f} minutes after the "
                                   "kick-off message was handled). Run the DevOps pipeline again."])
        return completed(f"pipeline {name} was never submitted: the DevOps task was closed as failed")

    if status in TERMINAL:
        return _backstop(client, message, name, context, services, status, getattr(job, "studio_url", None))

    if age > services.settings.watchdog_max_age_s:
        _cancel(client, name)
        _close(context, services, [f"The pipeline {name} was still {status} {age / 3600:.0f} h after it was "
                                   "submitted, longer than ORCHESTRATOR_WATCHDOG_MAX_AGE_S: it was cancelled."])
        return completed(f"pipeline {name} ran past the watchdog's limit: cancelled, DevOps task closed")
    return _next(message, watched, routing, services, now, f"pipeline {name} is {status}")


def _pipeline_only(message: WrapUp, watched: Watched, routing: dict[str, str], services: Services, now: datetime,
                   age: float) -> Outcome:
    """`waitForCompletion: false`: nothing in DevOps waits, so no task is read or closed (and no token read);
    the chain only sees the pipeline to its end (the report node publishes the test run), or cancels it
    past the watchdog's limit, and then lets the token go."""
    from orchestrator.azureml.client import get_client
    from orchestrator.azureml.submit import azure_errors, find_job
    from orchestrator.azureml.watch import TERMINAL

    client = get_client(services.workspace_options())
    name = watched.job_name
    with azure_errors(f"looking up pipeline job {name}"):
        job = find_job(client, name)
    status = str(job.status) if job is not None else None
    log.info("wrap_up job=%s check=%d pipeline=%s devops=no callback age=%.0fs", name, message.check, status, age)
    if status is None:
        if age < services.settings.submit_grace_s:
            return _next(message, watched, routing, services, now, f"pipeline {name} not found yet")
        return completed(f"pipeline {name} was never submitted; no DevOps task waits for it")
    if status in TERMINAL:
        return completed(f"pipeline {name} ended ({status}); no DevOps task waits for it (waitForCompletion: false)")
    if age > services.settings.watchdog_max_age_s:
        _cancel(client, name)
        return completed(f"pipeline {name} ran past the watchdog's limit: cancelled")
    return _next(message, watched, routing, services, now, f"pipeline {name} is {status}")


def _task_state(context: DevOpsContext, services: Services) -> TaskState:
    client = TaskClient(context, services.devops_policy)
    try:
        return client.state()
    finally:
        client.close()


def _cancelled(state: TaskState) -> bool:
    return (state.task_result in CANCELLED_RESULTS or state.job_result in CANCELLED_RESULTS
            or (state.job_completed and not state.task_completed))


def _cancel(client: Any, name: str) -> None:
    from orchestrator.azureml.submit import azure_errors

    with azure_errors(f"cancelling pipeline job {name}"):
        client.jobs.begin_cancel(name)
    log.warning("pipeline job=%s cancelled by the watchdog", name)


def _close(context: DevOpsContext, services: Services, lines: list[str]) -> None:
    outcome = close_server_task(context, "failed", lines, policy=services.devops_policy)
    if not (outcome.task_completed or outcome.already_completed):
        raise DevOpsError("; ".join(outcome.problems) or "the DevOps task could not be closed")


def _backstop(client: Any, message: WrapUp, name: str, context: DevOpsContext, services: Services, status: str,
              url: str | None) -> Outcome:
    """The pipeline ended and the task is still open: its report node failed, or never ran. Report here."""
    from orchestrator.azureml import collect, watch
    from orchestrator.azureml.submit import azure_errors
    from orchestrator.report import build_report

    note = (f"Reported by the orchestrator's watchdog: pipeline {name} ended ({status}) without its report step "
            f"closing this task. Studio: {url or 'no link'}")
    work = services.settings.work_dir
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orchestrator-wrapup-", dir=work) as scratch:
        run_dir = Path(scratch) / "run"
        (run_dir / "steps").mkdir(parents=True)
        with azure_errors(f"collecting the outputs of pipeline job {name}"):
            results = watch.collect_run(client, name, run_dir, expected=collect.decode_expected(message.expected),
                                        run_id=name, title=message.title,
                                        azureml=AzureMLJob(job_name=name, studio_url=url, status=status))
        build_report(run_dir)
        outcome = report_to_devops(run_dir, context, policy=services.devops_policy, notes=[note])
    if outcome.task_completed or outcome.already_completed:
        return completed(f"pipeline {name} ended ({status}, notebooks {results.status}) and its task was "
                         f"still open: reported and closed ({outcome.task_result})")
    raise DevOpsError("; ".join(outcome.all_problems) or "the DevOps task could not be closed")


def _next(message: WrapUp, watched: Watched, routing: dict[str, str], services: Services, now: datetime, why: str, *,
          closing: bool = False) -> Outcome:
    at = now + timedelta(seconds=services.settings.watchdog_interval_s)
    following = check_message(key=watched.key, check=message.check + 1, started_at=message.started_at,
                              expected=message.expected, title=message.title, context_body=dict(message.context_body),
                              properties=routing, closing=closing, callback=message.callback)
    services.schedule(following, at)
    return completed(f"{why}; check {message.check + 1} scheduled at {at.isoformat()}", rescheduled_at=at)
