"""Azure ML's RunStatusChanged events, from Event Grid (the Function's Event Grid trigger) or from the trigger's
Service Bus queue (an Event Grid subscription with a Service Bus destination, read by `orchestrator worker`):
the report backstop of orchestrator/azureml/backstop.py, with the trigger's outcomes (docs/azureml.md#run-status-events).

- an event for another run (another experiment, a child step, a run still going) is completed at once, from
  the event alone: nothing is read from Azure or Key Vault;
- a failure that may pass (Azure ML, Key Vault or DevOps unreachable) is abandoned for redelivery below
  ORCHESTRATOR_MAX_DELIVERIES, as for any message; the backstop is idempotent, so a retry repeats nothing done;
- a body that is not an event is dead-lettered with the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.outcome import Outcome, abandon, completed, dead_letter
from orchestrator.trigger.services import Services

log = logging.getLogger("orchestrator.trigger")

# Application properties Event Grid sets on each message it delivers to Service Bus (docs/azureml.md#run-status-events).
EVENT_GRID_PROPERTY_PREFIX = "aeg-"


def is_event_grid(raw: RawMessage) -> bool:
    """Whether a queue message is an Event Grid delivery rather than a kick_off or wrap_up."""
    if any(str(key).lower().startswith(EVENT_GRID_PROPERTY_PREFIX) for key in raw.properties):
        return True
    if b'"eventType"' not in raw.body:
        return False
    try:
        data = json.loads(raw.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    first = data[0] if isinstance(data, list) and data else data
    return isinstance(first, dict) and "eventType" in first and "job" not in first


def handle_event_message(raw: RawMessage, services: Services) -> Outcome:
    from orchestrator.azureml.backstop import parse_body

    event = parse_body(raw.body)
    if isinstance(event, str):
        return dead_letter(event)
    return handle_event(event, services, attempt=raw.attempt)


def handle_event(event: Any, services: Services, *, attempt: int = 1) -> Outcome:
    """`event`: a backstop.RunStatusChanged, or None for an event of another type."""
    from orchestrator.azureml.backstop import RunStatusChanged, report_job
    from orchestrator.azureml.client import get_client

    if not isinstance(event, RunStatusChanged):
        return completed("not an Azure ML RunStatusChanged event: dismissed")
    why = event.dismissal()
    if why is not None:
        return completed(f"dismissed: {why}")
    try:
        client = get_client(services.workspace_options())
        done = report_job(client, event.run_id, secrets=lambda config: _secret_getter(config, services),
                          work_dir=services.settings.work_dir, policy=services.devops_policy)
    except Exception as exc:  # noqa: BLE001 - Azure ML, Key Vault or DevOps unreachable, or an SDK surprise
        log.warning("event=%s run=%s backstop failed", event.event_id, event.run_id, exc_info=True)
        text = f"the report backstop for run {event.run_id} failed: {type(exc).__name__}: {exc}"
        if attempt < services.settings.max_deliveries:
            return abandon(f"{text} (delivery {attempt} of at most {services.settings.max_deliveries})")
        return dead_letter(f"gave up after {attempt} deliveries: {text}")
    log.info("event=%s run=%s %s", event.event_id, event.run_id, done.detail)
    return completed(done.detail)


def _secret_getter(config: Mapping[str, Any], services: Services) -> Callable[[str], str]:
    """The job token by name: from the trigger's own Key Vault when the settings name it (where kick_off put
    it), else from the vault they name, with this process's identity."""
    from orchestrator.azureml.devops_hook import KEY_VAULT_URL, key_vault_getter

    vault = str(config.get(KEY_VAULT_URL) or "")
    if vault and vault.rstrip("/") != str(services.settings.key_vault_url or "").rstrip("/"):
        return key_vault_getter(vault)

    def get(name: str) -> str:
        value = services.get_secrets().get(name)
        if not value:
            raise LookupError(f"Key Vault secret {name!r} is not there (the job is over, or its token was deleted)")
        return value

    return get
