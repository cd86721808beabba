"""The one entry every front end calls: `handle(raw, services) -> Outcome` (docs/architecture.md#thin-entry-points: the
Function, the worker and `orchestrator handle` only translate its outcome).

It is also the one place where exceptions become outcomes (docs/architecture.md#one-error-root), by these rules (docs/architecture.md#queue-messages):
- a message that cannot be understood or acted on (a bad body, a refused repository, an invalid plan) is
  dead-lettered with a reason a person can read, and its waiting DevOps job, when the properties name one,
  is closed as failed with that reason in its log;
- a failure that may pass (network, a service answering 5xx) is abandoned for redelivery while the message
  has been delivered fewer than ORCHESTRATOR_MAX_DELIVERIES times; at the limit it is dead-lettered and the
  job closed, so nothing is retried forever;
- a missing setting is an operator's problem that redelivery cannot fix: dead-lettered, job closed;
- DevOps refusing the job token (401/403/203) means the job is gone: dead-lettered; nobody is left to tell.

No reason, log line or DevOps log carries the job token: each text is scrubbed of it on the way out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.http import DevOpsAuthError
from orchestrator.devops.message import decode_properties
from orchestrator.devops.publish import close_server_task
from orchestrator.errors import (
    EXIT_INFRASTRUCTURE,
    EXIT_INVALID_INPUT,
    InfrastructureError,
    InvalidInputError,
    MissingExtraError,
)
from orchestrator.trigger.intake import Accepted, RawMessage, Refusal, read
from orchestrator.trigger.messages import KickOff, WrapUp
from orchestrator.trigger.outcome import Outcome, Refused, abandon, dead_letter
from orchestrator.trigger.services import Services
from orchestrator.trigger.settings import ConfigurationError
from orchestrator.trigger.signing import SIGNATURE_PROPERTY, verify

log = logging.getLogger("orchestrator.trigger")

_TOKEN_REFUSED = "refused the job token"  # DevOpsAuthError's words, as close_server_task reports them


def handle(raw: RawMessage, services: Services) -> Outcome:
    started = time.monotonic()
    from orchestrator.trigger.events import handle_event_message, is_event_grid

    if is_event_grid(raw):  # Azure ML's RunStatusChanged through an Event Grid subscription: the report backstop
        outcome = handle_event_message(raw, services)
        log.info("message=%s event attempt=%d outcome=%s secs=%.1f", raw.message_id, raw.attempt, outcome.summary(),
                 time.monotonic() - started)
        return outcome
    scrub = _scrubber(raw)
    intake = read(raw, services.settings)
    if services.settings_problem:
        # A deployment mistake: refuse (closing the job) rather than fail every delivery until the broker gives up.
        intake = Refusal(f"the trigger's app settings are not valid: {services.settings_problem}", (), intake.context)
    infrastructure = bool(services.settings_problem)
    if isinstance(intake, Accepted):
        try:
            intake = _believed(intake, services)
        except ConfigurationError as exc:
            intake, infrastructure = Refusal(str(exc), (), None), True
    if isinstance(intake, Refusal):
        outcome = refuse(intake, raw, services, exit_code=EXIT_INFRASTRUCTURE if infrastructure else EXIT_INVALID_INPUT)
        job = "?"
    else:
        outcome = _dispatch(intake, services)
        job = intake.message.job
    log.info("message=%s job=%s attempt=%d outcome=%s secs=%.1f", raw.message_id, job, raw.attempt,
             scrub(outcome.summary()), time.monotonic() - started)
    return outcome


def _believed(accepted: Accepted, services: Services) -> Accepted | Refusal:
    """A message only the trigger sends (a wrap_up) or one that says it was (signed) is acted on only when its
    signature holds (signing.py). Refused otherwise, closing nothing: its properties cannot be trusted either."""
    if not isinstance(accepted.message, WrapUp) and SIGNATURE_PROPERTY not in accepted.properties:
        return accepted
    why = verify(accepted.raw.body, accepted.properties, services.signing_key())
    if why is None:
        return _with_stored_token(accepted, services) if isinstance(accepted.message, KickOff) else accepted
    return Refusal(f"the {accepted.message.job} message is not believed: {why}",
                   ("nothing was read from Key Vault and no job was looked at or changed",))


def _with_stored_token(accepted: Accepted, services: Services) -> Accepted | Refusal:
    """A kick_off the trigger rescheduled (redelivery.py): its attempt number from its signed properties, its
    token from Key Vault under the name derived from its ids."""
    from orchestrator.devops.context import ServerTask
    from orchestrator.trigger.redelivery import ATTEMPT_PROPERTY
    from orchestrator.trigger.secret_store import secret_name_for

    props = accepted.properties
    counted = str(props.get(ATTEMPT_PROPERTY) or "")
    raw = replace(accepted.raw, attempt=max(accepted.raw.attempt, int(counted) if counted.isdigit() else 1))
    if accepted.context is not None:
        return replace(accepted, raw=raw)
    token = services.get_secrets().get(secret_name_for(ServerTask.from_properties(props).key))
    if not token:
        return Refusal("the job token of this rescheduled kick_off is no longer in Key Vault: its job is over")
    assert isinstance(accepted.message, KickOff)
    context = DevOpsContext.from_properties({**props, "AuthToken": token}, accepted.message.body_for_context())
    return replace(accepted, raw=raw, context=context)


def _dispatch(accepted: Accepted, services: Services) -> Outcome:
    raw, context = accepted.raw, accepted.context
    try:
        if isinstance(accepted.message, KickOff):
            if services.backend == "local":
                from orchestrator.trigger.localrun import kick_off_local

                return kick_off_local(accepted, services)
            from orchestrator.trigger.kickoff import kick_off

            return kick_off(accepted, services)
        if services.backend == "local":
            raise Refused("a wrap_up message watches an Azure ML pipeline; handle it with --backend azureml")
        from orchestrator.trigger.watchdog import wrap_up

        return wrap_up(accepted, services)
    except Refused as exc:
        return refuse(Refusal(exc.reason, exc.problems, context), raw, services, exit_code=exc.exit_code)
    except InvalidInputError as exc:
        problems = tuple(str(p) for p in exc.problems)
        return refuse(Refusal("the message cannot be acted on", problems, context), raw, services)
    except (ConfigurationError, MissingExtraError) as exc:
        return refuse(Refusal(str(exc), (), context), raw, services, exit_code=EXIT_INFRASTRUCTURE)
    except DevOpsAuthError as exc:
        log.error("message=%s %s", raw.message_id, exc)
        return dead_letter("Azure DevOps refused the job token: the job is gone or its token expired",
                           str(exc), exit_code=EXIT_INFRASTRUCTURE)
    except InfrastructureError as exc:
        return transient(str(exc), accepted, services)
    except Exception as exc:  # noqa: BLE001 - a bug or an SDK surprise: logged in full, retried within limits
        log.exception("message=%s failed unexpectedly", raw.message_id)
        return transient(f"unexpected {type(exc).__name__}: {exc}", accepted, services)


def transient(text: str, accepted: Accepted, services: Services) -> Outcome:
    raw, limit = accepted.raw, services.settings.max_deliveries
    text = _scrubber(raw)(text)
    if raw.attempt < limit:
        from orchestrator.trigger.redelivery import reschedule

        rescheduled = reschedule(accepted, services, text)
        if rescheduled is not None:
            return rescheduled
        log.warning("message=%s attempt=%d/%d will be redelivered: %s", raw.message_id, raw.attempt, limit, text)
        return abandon(f"{text} (delivery {raw.attempt} of at most {limit}; it will be redelivered)")
    tries = "1 delivery" if raw.attempt == 1 else f"{raw.attempt} deliveries"
    return refuse(Refusal(f"gave up after {tries}: {text}", (), accepted.context), raw, services,
                  exit_code=EXIT_INFRASTRUCTURE)


def refuse(refusal: Refusal, raw: RawMessage, services: Services, *, exit_code: int = EXIT_INVALID_INPUT) -> Outcome:
    """Dead-letter with the reason, after closing the waiting DevOps job (when there is one) with it."""
    scrub = _scrubber(raw, refusal.context)
    reason, problems = scrub(refusal.reason), [scrub(p) for p in refusal.problems]
    description = "; ".join(problems) if problems else reason
    log.error("message=%s refused: %s%s", raw.message_id, reason, "".join(f"\n  - {p}" for p in problems))
    note = ""
    context = refusal.context
    if context is not None and context.task is not None:
        lines = [f"The notebook orchestrator refused this run's queue message (message id {raw.message_id or '?'}):",
                 reason, *(f"  - {p}" for p in problems), "",
                 "Nothing was run. Fix the pipeline's PublishToAzureServiceBus messageBody or the repository, "
                 "then run the pipeline again (see the orchestrator's docs/trigger.md)."]
        closed = close_server_task(context, "failed", lines, policy=services.devops_policy)
        if not (closed.task_completed or closed.already_completed):
            trouble = scrub("; ".join(closed.problems) or "unknown problem")
            if _TOKEN_REFUSED not in trouble and raw.attempt < services.settings.max_deliveries:
                # Closing the job is the point of a refusal (docs/devops-protocol.md#service-checklist): let the message come back for it.
                log.warning("message=%s refusal not reported to DevOps, will be redelivered: %s", raw.message_id, trouble)
                return abandon(f"{reason}; the DevOps job could not be closed yet ({trouble})")
            note = f"; the DevOps job could not be closed: {trouble}"
        if not str(decode_properties(raw.properties).get("AuthToken") or "").strip():
            _forget_stored_token(context, services)
    return dead_letter(reason, description + note, exit_code=exit_code)


def _forget_stored_token(context: DevOpsContext, services: Services) -> None:
    """A rescheduled kick_off (redelivery.py) read its token from Key Vault; refused for good, nothing will
    need it again. Best effort, like the watchdog's."""
    from orchestrator.trigger.secret_store import secret_name_for

    assert context.task is not None
    name = secret_name_for(context.task.key)
    try:
        services.get_secrets().delete(name)
    except Exception as exc:  # noqa: BLE001 - Key Vault unreachable: the secret stays, and the log says so
        log.warning("devops token secret=%s not deleted (%s: %s)", name, type(exc).__name__, exc)


def _scrubber(raw: RawMessage, context: DevOpsContext | None = None) -> "_Scrub":
    tokens = {str(decode_properties(raw.properties).get("AuthToken") or "").strip()}
    if context is not None:
        tokens.add(context.token.reveal())
    return _Scrub(sorted((t for t in tokens if len(t) >= 4), key=len, reverse=True))


class _Scrub:
    def __init__(self, tokens: list[str]) -> None:
        self._tokens = tokens

    def __call__(self, text: str) -> str:
        for token in self._tokens:
            text = text.replace(token, "***")
        return text
