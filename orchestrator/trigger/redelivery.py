"""Redelivery with growing delays for a kick_off that failed for a reason that may pass (docs/trigger.md, "What
happens to a message").

Abandoning a message makes Service Bus deliver it again at once, so a minute's outage of Azure ML or DevOps
would spend every allowed delivery in seconds and close the job as failed. Instead the trigger sends itself
a copy of the kick_off, scheduled (as the watchdog's checks are) ORCHESTRATOR_REDELIVERY_DELAY_S later, then
twice that, and so on (at most an hour apart), and completes the original. The copy:
- carries the attempt number in OrchestratorAttempt, so ORCHESTRATOR_MAX_DELIVERIES still bounds the whole
  chain, and the job is closed as failed at the limit as before;
- carries the routing properties but never the job token: the token waits in Key Vault under the name
  derived from PlanId/JobId/TaskInstanceId (the one the kick_off itself uses), and the copy is read only
  when its signature holds (signing.py), so nobody else can make the trigger fetch that token.
When the copy cannot be scheduled (no Key Vault, Service Bus unreachable), the message is abandoned instead.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from orchestrator.errors import EXIT_INFRASTRUCTURE
from orchestrator.trigger.intake import Accepted, routing_properties
from orchestrator.trigger.messages import KickOff
from orchestrator.trigger.outcome import COMPLETE, Outcome
from orchestrator.trigger.scheduling import OutgoingMessage
from orchestrator.trigger.secret_store import secret_name_for
from orchestrator.trigger.services import Services

log = logging.getLogger("orchestrator.trigger")

ATTEMPT_PROPERTY = "OrchestratorAttempt"
MAX_DELAY_S = 3600.0
# A stored token outlives the watchdog by a day (kickoff.py): the same here, for the same secret.
TOKEN_EXTRA_LIFE = timedelta(days=1)


def delay_s(attempt: int, services: Services) -> float:
    """The pause before delivery `attempt + 1`: the base delay, doubled at each failed delivery."""
    return float(min(MAX_DELAY_S, services.settings.redelivery_delay_s * 2 ** max(0, attempt - 1)))


def reschedule(accepted: Accepted, services: Services, why: str) -> Outcome | None:
    """Schedule the next delivery of a failed kick_off; None when it cannot be (the caller abandons)."""
    message, context, raw = accepted.message, accepted.context, accepted.raw
    if services.backend != "azureml" or not isinstance(message, KickOff) or context is None or context.task is None:
        return None
    now = services.now()
    at = now + timedelta(seconds=delay_s(raw.attempt, services))
    try:
        services.get_secrets().put(secret_name_for(context.task.key), context.token.reveal(),
                                   expires_on=now + timedelta(seconds=services.settings.watchdog_max_age_s)
                                   + TOKEN_EXTRA_LIFE)
        services.schedule(_copy(accepted, raw.attempt + 1), at)
    except Exception as exc:  # noqa: BLE001 - Key Vault or Service Bus unreachable too: abandon after all
        log.warning("message=%s could not be rescheduled (%s: %s); abandoning it", raw.message_id,
                    type(exc).__name__, exc)
        return None
    limit = services.settings.max_deliveries
    log.warning("message=%s attempt=%d/%d rescheduled at=%s: %s", raw.message_id, raw.attempt, limit,
                at.isoformat(), why)
    return _rescheduled(f"{why} (delivery {raw.attempt} of at most {limit}; delivery {raw.attempt + 1} "
                        f"scheduled at {at.isoformat()})", at)


def _copy(accepted: Accepted, attempt: int) -> OutgoingMessage:
    assert isinstance(accepted.message, KickOff) and accepted.context is not None
    key = accepted.context.task.key if accepted.context.task else ""
    body = accepted.message.model_dump(mode="json", exclude_none=True)
    properties = {**routing_properties(accepted.context), ATTEMPT_PROPERTY: str(attempt)}
    # Deterministic: duplicate detection drops a second copy a redelivered original may schedule.
    return OutgoingMessage(message_id=f"kick-off-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:24]}-{attempt}",
                           body=body, properties=properties)


def _rescheduled(detail: str, at: datetime) -> Outcome:
    # Completed (the copy carries on), but for `handle` it is not done: exit 3, as a redelivery would be.
    return Outcome(COMPLETE, detail=detail, rescheduled_at=at, exit_code=EXIT_INFRASTRUCTURE)
