"""`orchestrator worker`: the same handlers over azure-servicebus, for teams that run a container instead of
a Function (docs/architecture.md#commands-and-exit-codes, docs/architecture.md#queue-messages; docs/devops-protocol.md#consuming-messages, docs/devops-protocol.md#service-checklist).

- PEEK_LOCK receive, one message at a time, no prefetch: a prefetched message's lock is not renewed and would
  expire while the current one is handled, to be redelivered for nothing;
- an AutoLockRenewer keeps the lock for up to ORCHESTRATOR_LOCK_RENEWAL_S while a message is handled;
- the message is settled only after its handler returned: complete, dead-letter with the reason and its
  description, or abandon for redelivery (transient, below the delivery limit);
- SIGTERM / SIGINT: the current message is finished and settled, then the receiver is closed and the
  worker exits 0. A message whose lock is lost (a kill) comes back, and dedupe makes that harmless.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.errors import InfrastructureError
from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.outcome import ABANDON, COMPLETE, DEAD_LETTER, Outcome
from orchestrator.trigger.settings import TriggerSettings

log = logging.getLogger("orchestrator.trigger")

RECEIVE_WAIT_S = 5.0  # how long one receive waits for a message: also how soon a stop request is noticed
# Receive failures in a row (after the SDK's own retries) before the worker gives up and exits 3.
MAX_RECEIVE_FAILURES = 10
RECEIVE_BACKOFF_S = 5.0


class Worker:
    """The receive-handle-settle loop, over any receiver with azure-servicebus's ServiceBusReceiver methods
    (tests pass a fake). `handler` is handlers.handle bound to the worker's Services."""

    def __init__(self, receiver: Any, handler: Callable[[RawMessage], Outcome], *, renewer: Any = None,
                 lock_renewal_s: float = 3600.0, stop: threading.Event | None = None,
                 receive_wait_s: float = RECEIVE_WAIT_S) -> None:
        self.receiver = receiver
        self.handler = handler
        self.renewer = renewer
        self.lock_renewal_s = lock_renewal_s
        self.stop = stop or threading.Event()
        self.receive_wait_s = receive_wait_s
        self.counts = {COMPLETE: 0, DEAD_LETTER: 0, ABANDON: 0}

    def run(self, max_messages: int | None = None) -> int:
        """Handle messages until asked to stop (or `max_messages` handled). Returns how many were handled."""
        handled = failures = 0
        while not self.stop.is_set() and (max_messages is None or handled < max_messages):
            try:
                messages = self.receiver.receive_messages(max_message_count=1, max_wait_time=self.receive_wait_s)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - e.g. ServiceBusConnectionError: the network may come back
                failures += 1
                if failures >= MAX_RECEIVE_FAILURES:
                    raise InfrastructureError(f"cannot receive from Service Bus ({failures} failures in a row): "
                                              f"{type(exc).__name__}: {exc}") from None
                log.warning("receive failed (%s: %s); trying again", type(exc).__name__, exc)
                self.stop.wait(RECEIVE_BACKOFF_S)
                continue
            for message in messages:
                self.process(message)
                handled += 1
        log.info("worker stopping: handled=%d completed=%d dead_lettered=%d abandoned=%d", handled,
                 self.counts[COMPLETE], self.counts[DEAD_LETTER], self.counts[ABANDON])
        return handled

    def process(self, message: Any) -> Outcome:
        if self.renewer is not None:
            self.renewer.register(self.receiver, message, max_lock_renewal_duration=self.lock_renewal_s)
        try:
            outcome = self.handler(RawMessage.from_servicebus(message))
        except Exception as exc:  # noqa: BLE001 - handle() returns outcomes; this is a last line of defence
            log.exception("message=%s handler crashed; abandoning it", getattr(message, "message_id", "?"))
            outcome = Outcome(ABANDON, reason=f"handler crashed: {type(exc).__name__}")
        self.settle(message, outcome)
        return outcome

    def settle(self, message: Any, outcome: Outcome) -> None:
        try:
            if outcome.action == COMPLETE:
                self.receiver.complete_message(message)
            elif outcome.action == DEAD_LETTER:
                self.receiver.dead_letter_message(message, reason=outcome.reason,
                                                  error_description=outcome.description or outcome.reason)
            else:
                self.receiver.abandon_message(message)
            self.counts[outcome.action] += 1
        except Exception as exc:  # noqa: BLE001 - e.g. MessageLockLostError: it will be redelivered, and dedupe holds
            log.error("message=%s could not be settled (%s: %s): it will be delivered again",
                      getattr(message, "message_id", "?"), type(exc).__name__, exc)


@contextlib.contextmanager
def open_receiver(settings: TriggerSettings) -> Iterator[tuple[Any, Any]]:
    """A PEEK_LOCK queue receiver (no prefetch) and its AutoLockRenewer, closed in that order on exit."""
    from azure.servicebus import AutoLockRenewer, ServiceBusReceiveMode

    from orchestrator.trigger.scheduling import servicebus_client

    with servicebus_client(settings) as client:
        renewer = AutoLockRenewer(max_lock_renewal_duration=settings.lock_renewal_s)
        try:
            with client.get_queue_receiver(settings.queue_name, receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                                           prefetch_count=0) as receiver:
                yield receiver, renewer
        finally:
            renewer.close()


def run_worker(settings: TriggerSettings, handler: Callable[[RawMessage], Outcome], stop: threading.Event,
               max_messages: int | None = None) -> int:
    with open_receiver(settings) as (receiver, renewer):
        log.info("worker listening queue=%s", settings.queue_name)
        return Worker(receiver, handler, renewer=renewer, lock_renewal_s=settings.lock_renewal_s,
                      stop=stop).run(max_messages)
