"""The Azure Functions: a Service Bus queue trigger, and an Event Grid trigger for Azure ML's RunStatusChanged
events (the report backstop, orchestrator/trigger/events.py), in the Python v2 programming model, as a Blueprint that
functionapp/function_app.py registers (docs/architecture.md#code-habits, "Azure Functions, v2 programming model").

Thin (docs/architecture.md#thin-entry-points): the message becomes a RawMessage, `handlers.handle` decides, and the outcome is carried out
with what the standard binding offers. With `autoCompleteMessages` on (host.json; the only mode the Python
worker's standard binding settles messages in), the host completes the message when this function returns
and abandons it when it raises. So:
- complete -> return;
- abandon (a transient failure, below ORCHESTRATOR_MAX_DELIVERIES) -> raise RedeliveryRequested: the host
  abandons, Service Bus redelivers with DeliveryCount + 1;
- dead-letter -> return, after the handler has closed the DevOps job with the reason and logged the refusal
  at ERROR. The standard Python binding has no dead-letter action (settlement from Python needs the preview
  SDK-type binding extension); docs/trigger.md says how to read refusals, and the worker dead-letters for
  real. Raising instead would make the refusal a retry loop, which docs/architecture.md#queue-messages forbids.
`connection` is the NAME of the app setting holding the Service Bus connection, never the secret itself.
"""

from __future__ import annotations

import logging

import azure.functions as func

from orchestrator.azureml.sdk import quiet_sdk_notices
from orchestrator.errors import InvalidInputError
from orchestrator.trigger.handlers import handle
from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.outcome import ABANDON, DEAD_LETTER, Outcome
from orchestrator.trigger.services import Services
from orchestrator.trigger.settings import CONNECTION_SETTING, QUEUE_SETTING, TriggerSettings, startup_line

log = logging.getLogger("orchestrator.trigger")

bp = func.Blueprint()  # type: ignore[no-untyped-call]
quiet_sdk_notices()

_ready, _line = startup_line("the orchestrator Function")  # once, when the host indexes the app
(log.info if _ready else log.error)(_line)


class RedeliveryRequested(Exception):
    """Raised to make the Functions host abandon the message, so that Service Bus delivers it again."""


def function_services() -> Services:
    """Services for one invocation, from the app settings (the seams' factories decide the fakes in tests).
    Malformed settings do not raise (that would retry every message until the broker dead-letters it): each
    message is refused with the settings' problems, and its DevOps job closed."""
    try:
        settings = TriggerSettings.from_environ()
    except InvalidInputError as exc:
        log.error("the trigger's app settings are not valid: %s", exc)
        return Services(backend="azureml", settings_problem=str(exc).replace("\n", "; "))
    return Services(settings=settings, backend="azureml", allow_local=False)


def settle(outcome: Outcome, message_id: str) -> None:
    if outcome.action == ABANDON:
        raise RedeliveryRequested(outcome.reason)
    if outcome.action == DEAD_LETTER:
        log.error("message=%s dead-letter: %s | %s (completed: the standard binding cannot dead-letter; the "
                  "DevOps job holds the reason)", message_id, outcome.reason, outcome.description)


@bp.service_bus_queue_trigger(arg_name="message", queue_name=f"%{QUEUE_SETTING}%", connection=CONNECTION_SETTING)
def orchestrator_queue(message: func.ServiceBusMessage) -> None:
    raw = RawMessage.from_function(message)
    outcome = handle(raw, function_services())
    settle(outcome, raw.message_id)


@bp.event_grid_trigger(arg_name="event")
def orchestrator_run_status(event: func.EventGridEvent) -> None:
    """Azure ML RunStatusChanged -> the report backstop. Raising makes Event Grid retry the delivery (its own
    retry policy and dead-letter destination, docs/azureml.md#run-status-events); every other outcome returns."""
    from orchestrator.azureml.backstop import RunStatusChanged
    from orchestrator.trigger.events import handle_event

    parsed = RunStatusChanged.parse({"id": event.id, "eventType": event.event_type, "data": event.get_json()})
    outcome = handle_event(parsed, function_services())
    settle(outcome, event.id)
