"""A raw queue message -> a validated message, or a refusal a person can read (docs/architecture.md#queue-messages).

Three front ends hand messages over in three shapes: the Function (`azure.functions.ServiceBusMessage`), the
worker (`azure.servicebus.ServiceBusReceivedMessage`, whose property keys and string values are bytes,
docs/devops-protocol.md#message-properties) and `orchestrator handle` (a message file, docs/architecture.md#queue-messages). Each becomes one `RawMessage`,
and `read` applies the same rules to all: size first (before decoding anything), then the body, plain or
DataContractSerializer-wrapped (docs/devops-protocol.md#message-body-encoding, decoded by orchestrator.devops.message), then the model, then
the DevOps properties. Every problem found is listed, and the DevOps job to close is kept whenever the
properties name one, so that even an unreadable body closes its waiting job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.devops.context import REQUIRED_PROPERTIES, DevOpsContext
from orchestrator.devops.hosts import refusal
from orchestrator.devops.message import (MessageFile, decode_body, decode_properties, load_message_file,
                                         load_message_stream)
from orchestrator.errors import InvalidInputError
from orchestrator.trigger.messages import KickOff, Message, WrapUp, parse_body
from orchestrator.trigger.settings import TriggerSettings

# A wrap_up carries the routing properties but never the token (it is read from Key Vault, docs/architecture.md#secrets-policy).
WRAP_UP_PROPERTIES = tuple(name for name in REQUIRED_PROPERTIES if name != "AuthToken")


@dataclass(frozen=True)
class RawMessage:
    message_id: str
    body: bytes
    properties: Mapping[Any, Any] = field(default_factory=dict, repr=False)  # holds the token: never shown
    attempt: int = 1                 # deliveries of this message so far, this one included
    body_error: str | None = None    # the message file's body could not even be read as bytes

    @classmethod
    def from_function(cls, message: Any) -> RawMessage:
        """From `azure.functions.ServiceBusMessage`. The host's DeliveryCount counts this delivery (1-based)."""
        return cls(message_id=str(getattr(message, "message_id", "") or ""), body=bytes(message.get_body() or b""),
                   properties=dict(getattr(message, "application_properties", None) or {}),
                   attempt=max(1, int(getattr(message, "delivery_count", None) or 1)))

    @classmethod
    def from_servicebus(cls, message: Any) -> RawMessage:
        """From `azure.servicebus.ServiceBusReceivedMessage`: a DATA body is an iterable of bytes sections
        [ASB]; the AMQP header's delivery-count is the number of *prior* attempts, hence the + 1."""
        body = message.body
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode("utf-8")
        elif isinstance(body, dict):  # an AMQP VALUE body sent by another client: read it as JSON
            data = json.dumps(body, default=str).encode("utf-8")
        else:
            try:
                data = b"".join(bytes(part) if not isinstance(part, str) else part.encode("utf-8") for part in body)
            except TypeError:  # a VALUE body holding something else: refused by `read` as not JSON
                data = repr(body).encode("utf-8")
        return cls(message_id=str(message.message_id or ""), body=data,
                   properties=dict(message.application_properties or {}),
                   attempt=int(message.delivery_count or 0) + 1)

    @classmethod
    def from_file(cls, path: Path) -> RawMessage:
        """A message file (orchestrator.devops.message.load_message_file, the one reader of that format). A
        file that is not such an object is an input error (exit 2); a body that cannot be read becomes a
        refusal, so the job named by the properties is still closed."""
        return cls._from_loaded(load_message_file(path))

    @classmethod
    def from_stdin(cls, stream: BinaryIO) -> RawMessage:
        """The same JSON read from standard input (`handle -`), so that no file holding the token need exist."""
        return cls._from_loaded(load_message_stream(stream))

    @classmethod
    def _from_loaded(cls, loaded: MessageFile) -> RawMessage:
        problem = loaded.body_problem
        return cls(message_id=loaded.message_id, body=loaded.body, properties=loaded.properties,
                   body_error=f"{problem.location}: {problem.message}" if problem is not None else None)


@dataclass(frozen=True)
class Accepted:
    raw: RawMessage
    message: Message
    properties: dict[str, Any] = field(repr=False)
    context: DevOpsContext | None  # kick_off: the job to report to; wrap_up: None (the token is in Key Vault)


@dataclass(frozen=True)
class Refusal:
    """Why a message cannot be handled: `reason` (one line) and `problems` (each a line)."""

    reason: str
    problems: tuple[str, ...] = ()
    context: DevOpsContext | None = None  # the waiting job, when the properties name one

    @property
    def description(self) -> str:
        return "; ".join(self.problems) if self.problems else self.reason


def read(raw: RawMessage, settings: TriggerSettings) -> Accepted | Refusal:
    properties = decode_properties(raw.properties)
    plan_url = str(properties.get("PlanUrl") or "").strip()
    unlisted = refusal(plan_url) if plan_url else None
    if unlisted is not None:
        # Before anything else: no job is closed, no secret read, nothing sent to a host the sender chose.
        return Refusal("the message's callback host is not allowed", (f"application_properties.PlanUrl: {unlisted}",))
    closable, property_problems = _closable(properties)

    if raw.body_error:
        return Refusal("the message body cannot be read", (raw.body_error, *property_problems), closable)
    if len(raw.body) > settings.max_body_bytes:
        return Refusal(f"the message body is {len(raw.body)} bytes, over the limit of {settings.max_body_bytes} "
                       "(ORCHESTRATOR_MAX_BODY_BYTES)", tuple(property_problems), closable)
    if not raw.body.strip():
        return Refusal("the message body is empty", tuple(property_problems), closable)
    try:
        body = decode_body(raw.body)
    except (ValueError, UnicodeDecodeError) as exc:
        return Refusal("the message body is not a JSON object", (f"body: {exc}", *property_problems), closable)
    try:
        message = parse_body(body)
    except InvalidInputError as exc:
        kind = body.get("job") if body.get("job") in ("kick_off", "wrap_up") else "queue"
        return Refusal(f"the message body is not a valid {kind} message",
                       (*_lines(exc), *property_problems), closable)

    if isinstance(message, KickOff):
        if _rescheduled_copy(properties):
            # The trigger's own copy (redelivery.py): no token; handlers check its signature, then read the
            # token from Key Vault. Until then there is no context.
            return Accepted(raw=raw, message=message, properties=properties, context=None)
        if property_problems:
            return Refusal("the message lacks the Azure DevOps properties of a server job "
                           "(PublishToAzureServiceBus sends them: docs/devops-protocol.md#message-properties)", tuple(property_problems))
        context = DevOpsContext.from_properties(properties, message.body_for_context())
        return Accepted(raw=raw, message=message, properties=properties, context=context)
    assert isinstance(message, WrapUp)
    missing = [name for name in WRAP_UP_PROPERTIES if not str(properties.get(name) or "").strip()]
    if missing:
        return Refusal("the wrap_up message lacks its DevOps properties",
                       tuple(f"application_properties.{name}: missing or empty" for name in missing))
    return Accepted(raw=raw, message=message, properties=properties, context=None)


def _rescheduled_copy(properties: Mapping[str, Any]) -> bool:
    from orchestrator.trigger.signing import SIGNATURE_PROPERTY

    ids_present = not [name for name in WRAP_UP_PROPERTIES if not str(properties.get(name) or "").strip()]
    return SIGNATURE_PROPERTY in properties and ids_present and not str(properties.get("AuthToken") or "").strip()


def _closable(properties: Mapping[str, Any]) -> tuple[DevOpsContext | None, list[str]]:
    """The DevOps job named by the properties alone (to close it on refusal), and what is wrong with them."""
    try:
        return DevOpsContext.from_properties(properties, {}), []
    except InvalidInputError as exc:
        return None, _lines(exc)


def _lines(exc: InvalidInputError) -> list[str]:
    return [f"{p.location}: {p.message}" if p.location else p.message for p in exc.problems]


def routing_properties(context: DevOpsContext) -> dict[str, str]:
    """The server job's properties without its token: what the report node and the watchdog carry
    (orchestrator/azureml/devops_hook.py `properties`; docs/architecture.md#secrets-policy)."""
    task = context.task
    assert task is not None
    properties = {"PlanUrl": context.collection_url, "ProjectId": context.project, "HubName": task.hub_name,
                  "PlanId": task.plan_id, "JobId": task.job_id, "TimelineId": task.timeline_id,
                  "TaskInstanceId": task.task_instance_id}
    if task.task_instance_name:
        properties["TaskInstanceName"] = task.task_instance_name
    return properties
