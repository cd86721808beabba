"""Scheduled messages: the wrap_up watchdog is a message this trigger sends to its own queue, to be delivered
later (Service Bus scheduled enqueue; docs/architecture.md#queue-messages). A seam like the others: production sends through
azure-servicebus, tests install a fake with `set_scheduler_factory` and deliver its messages themselves.

A scheduled wrap_up carries the routing properties of the DevOps job but never its token (docs/architecture.md#secrets-policy): the
watchdog reads the token from Key Vault by the name in the body. Its message id is deterministic (key and
check number), so a queue with duplicate detection on drops a second copy sent by a redelivered kick_off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from orchestrator.errors import MissingExtraError
from orchestrator.seam import Seam
from orchestrator.trigger.settings import ConfigurationError, TriggerSettings

log = logging.getLogger("orchestrator.trigger")


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: str
    body: dict[str, Any]
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(name.lower() == "authtoken" for name in self.properties):
            raise ValueError("a message this trigger sends never carries the job token (docs/architecture.md#secrets-policy)")

    @property
    def body_bytes(self) -> bytes:
        """The body exactly as sent, and as signed (signing.py)."""
        return json.dumps(self.body, sort_keys=True, separators=(",", ":")).encode("utf-8")


class Scheduler(Protocol):
    def schedule(self, message: OutgoingMessage, at: datetime) -> None: ...


def servicebus_client(settings: TriggerSettings, environ: Mapping[str, str] | None = None) -> Any:
    """A ServiceBusClient from the connection setting: its value is a connection string, or, as Functions
    identity-based connections are written, `<NAME>__fullyQualifiedNamespace` with DefaultAzureCredential."""
    environ = os.environ if environ is None else environ
    try:
        from azure.servicebus import ServiceBusClient
    except ImportError:
        raise MissingExtraError("azure-servicebus", "trigger") from None
    name = settings.connection_setting
    connection = environ.get(name, "").strip()
    if connection:
        return ServiceBusClient.from_connection_string(connection)
    namespace = environ.get(f"{name}__fullyQualifiedNamespace", "").strip()
    if namespace:
        from azure.identity import DefaultAzureCredential

        return ServiceBusClient(namespace, DefaultAzureCredential())
    raise ConfigurationError(f"the trigger is not configured: set {name} (a Service Bus connection string) or "
                             f"{name}__fullyQualifiedNamespace (with a managed identity)")


class ServiceBusScheduler:
    def __init__(self, settings: TriggerSettings) -> None:
        self.settings = settings

    def schedule(self, message: OutgoingMessage, at: datetime) -> None:
        from azure.servicebus import ServiceBusMessage

        properties: dict[str | bytes, Any] = {name: value for name, value in message.properties.items()}
        outgoing = ServiceBusMessage(message.body_bytes, application_properties=properties,
                                     message_id=message.message_id, content_type="application/json",
                                     subject=str(message.body.get("job", "")))
        with servicebus_client(self.settings) as client, client.get_queue_sender(self.settings.queue_name) as sender:
            sender.schedule_messages(outgoing, at)
        log.info("scheduled message=%s job=%s at=%s", message.message_id, message.body.get("job"), at.isoformat())


SchedulerFactory = Callable[[TriggerSettings], Scheduler]


def default_factory(settings: TriggerSettings) -> Scheduler:
    return ServiceBusScheduler(settings)


_seam: Seam[SchedulerFactory] = Seam(default_factory)


def set_scheduler_factory(factory: SchedulerFactory | None) -> SchedulerFactory:
    """Replace the factory (tests: a fake); None restores Service Bus. Returns the previous one."""
    return _seam.replace(factory)


def get_scheduler(settings: TriggerSettings) -> Scheduler:
    return _seam.factory(settings)
