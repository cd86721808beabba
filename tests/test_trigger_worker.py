"""`orchestrator worker`'s loop over a fake receiver (no network): peek-lock settlement after handling,
lock renewal, dead-letter reasons, redelivery within limits, a kick-off that crashes after submitting, and a
clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.trigger import kickoff
from orchestrator.trigger.handlers import handle
from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.outcome import Outcome, abandon, completed, dead_letter
from orchestrator.trigger.worker import Worker
from tests.devops_server import DevOpsServer
from tests.trigger_support import kick_off_body, make_services, notebook_repo


@dataclass
class Received:
    """What azure-servicebus hands the worker: bytes sections, bytes property keys, a 0-based delivery count."""

    message_id: str
    body: list[bytes]
    application_properties: dict[bytes, Any]
    delivery_count: int = 0


@dataclass
class FakeReceiver:
    """A queue with peek-lock semantics: an abandoned message comes back with delivery_count + 1."""

    queue: list[Received] = field(default_factory=list)
    settled: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    on_empty: Any = None

    def receive_messages(self, max_message_count: int = 1, max_wait_time: float | None = None) -> list[Received]:
        if not self.queue:
            if self.on_empty:
                self.on_empty()
            return []
        return [self.queue.pop(0)]

    def complete_message(self, message: Received) -> None:
        self.settled.append(("complete", message.message_id, {}))

    def dead_letter_message(self, message: Received, reason: str | None = None,
                            error_description: str | None = None) -> None:
        self.settled.append(("dead_letter", message.message_id, {"reason": reason, "error_description": error_description}))

    def abandon_message(self, message: Received) -> None:
        self.settled.append(("abandon", message.message_id, {}))
        self.queue.append(Received(message.message_id, message.body, message.application_properties,
                                   message.delivery_count + 1))


@dataclass
class FakeRenewer:
    registered: list[tuple[str, float | None]] = field(default_factory=list)

    def register(self, receiver: Any, message: Received, max_lock_renewal_duration: float | None = None) -> None:
        self.registered.append((message.message_id, max_lock_renewal_duration))


def received(message_id: str, body: dict[str, Any] | bytes, properties: dict[str, Any]) -> Received:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Received(message_id, [data[:10], data[10:]], {k.encode(): str(v).encode() for k, v in properties.items()})


def until_empty(stop: threading.Event) -> FakeReceiver:
    return FakeReceiver(on_empty=stop.set)


def with_scheduled_enqueue(stop: threading.Event, services: Any) -> FakeReceiver:
    """A queue that, once empty, moves the clock to the next scheduled kick_off and delivers it (the watchdog's
    checks, an endless chain while the fake pipeline runs, are left alone)."""
    receiver = FakeReceiver()
    sent: set[str] = set()

    def on_empty() -> None:
        pending = [(m, at) for m, at in services.scheduler.scheduled
                   if m.body["job"] == "kick_off" and m.message_id not in sent]
        if not pending:
            stop.set()
            return
        message, at = pending[0]
        sent.add(message.message_id)
        services.clock.now = at
        receiver.queue.append(Received(message.message_id, [message.body_bytes],
                                       {k.encode(): v.encode() for k, v in message.properties.items()}))

    receiver.on_empty = on_empty
    return receiver


def test_each_outcome_is_settled_after_handling_and_locks_are_renewed() -> None:
    stop = threading.Event()
    receiver = until_empty(stop)
    receiver.queue = [received(f"m{n}", {"n": n}, {}) for n in range(3)]
    outcomes = {"m0": completed("done"), "m1": dead_letter("the message body is not valid", "body.job: missing"),
                "m2": abandon("Azure ML unreachable")}
    seen: list[RawMessage] = []

    def handler(raw: RawMessage) -> Outcome:
        seen.append(raw)
        # Not settled before it is handled: this delivery of the message has not been settled yet.
        assert [m for _a, m, _k in receiver.settled].count(raw.message_id) == raw.attempt - 1
        return outcomes[raw.message_id] if raw.attempt == 1 else completed("second time")

    renewer = FakeRenewer()
    handled = Worker(receiver, handler, renewer=renewer, lock_renewal_s=1234.0, stop=stop, receive_wait_s=0).run()
    assert handled == 4  # m2 came back once
    assert [(a, m) for a, m, _k in receiver.settled] == [("complete", "m0"), ("dead_letter", "m1"),
                                                        ("abandon", "m2"), ("complete", "m2")]
    assert receiver.settled[1][2] == {"reason": "the message body is not valid", "error_description": "body.job: missing"}
    assert renewer.registered == [("m0", 1234.0), ("m1", 1234.0), ("m2", 1234.0), ("m2", 1234.0)]
    assert seen[0].body == b'{"n": 0}' and [r.attempt for r in seen] == [1, 1, 1, 2]  # 0-based count + 1


def test_a_handler_crash_abandons_and_a_settlement_failure_does_not_stop_the_worker() -> None:
    stop = threading.Event()

    class LockLost(FakeReceiver):
        def complete_message(self, message: Received) -> None:
            raise RuntimeError("MessageLockLostError")

    receiver = LockLost(on_empty=stop.set)
    receiver.queue = [received("boom", {}, {}), received("ok", {}, {})]

    def handler(raw: RawMessage) -> Outcome:
        if raw.message_id == "boom" and raw.attempt == 1:
            raise ValueError("bug")
        return completed()

    assert Worker(receiver, handler, stop=stop, receive_wait_s=0).run() == 3
    assert [a for a, _m, _k in receiver.settled] == ["abandon"]  # the completes raised; logged, loop went on


def test_a_transient_failure_is_retried_up_to_the_limit_then_dead_lettered_and_the_job_closed(
        tmp_path: Path, devops_server: DevOpsServer, fake_ml: Any) -> None:
    from azure.core.exceptions import ServiceRequestError

    def unreachable(name: str) -> Any:
        raise ServiceRequestError("connection refused")

    fake_ml.jobs.get = unreachable  # Azure ML cannot be reached, every time
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    services = make_services(tmp_path, max_deliveries=3)
    started = services.now()
    stop = threading.Event()
    receiver = with_scheduled_enqueue(stop, services)
    receiver.queue = [received("m", kick_off_body(str(repo.bare), commit, plan="."), devops_server.message_properties())]
    Worker(receiver, lambda raw: handle(raw, services), stop=stop, receive_wait_s=0).run()
    # Not abandoned (redelivered at once): completed, each time after scheduling the next delivery later.
    assert [a for a, _m, _k in receiver.settled] == ["complete", "complete", "dead_letter"]
    assert [(at - started).total_seconds() for _m, at in services.scheduler.scheduled] == [30.0, 30.0 + 60.0]
    reason = receiver.settled[-1][2]["reason"]
    assert "gave up after 3 deliveries" in reason and "cannot reach Azure ML" in reason
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed"


def test_a_kick_off_that_crashes_after_submitting_is_completed_exactly_once_on_redelivery(
        tmp_path: Path, devops_server: DevOpsServer, fake_ml: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    services = make_services(tmp_path)
    crashes = iter([True])
    real_post = kickoff.post_studio_link

    def crash_once(*args: Any, **kwargs: Any) -> None:
        if next(crashes, False):
            raise RuntimeError("the instance died right after submitting")
        real_post(*args, **kwargs)

    monkeypatch.setattr(kickoff, "post_studio_link", crash_once)
    stop = threading.Event()
    receiver = with_scheduled_enqueue(stop, services)
    receiver.queue = [received("m", kick_off_body(str(repo.bare), commit, plan="."), devops_server.message_properties())]
    Worker(receiver, lambda raw: handle(raw, services), stop=stop, receive_wait_s=0).run()
    assert [a for a, _m, _k in receiver.settled] == ["complete", "complete"]  # rescheduled, then its copy
    assert len(fake_ml.jobs.created) == 1  # the redelivery found the job and submitted nothing
    assert devops_server.task_completed_events() == []  # the pipeline's report node closes it, not the kick-off


WORKER_SCRIPT = """
import sys, threading, signal, time
from orchestrator.trigger.worker import Worker
from orchestrator.trigger.outcome import completed

class Receiver:
    settled = []
    def receive_messages(self, max_message_count=1, max_wait_time=None):
        time.sleep(0.05)
        return [type("M", (), {"message_id": "m", "body": [b"{}"], "application_properties": {}, "delivery_count": 0})()]
    def complete_message(self, message):
        self.settled.append("complete")

def slow(raw):
    print("handling", flush=True)
    time.sleep(0.5)
    return completed()

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
receiver = Receiver()
handled = Worker(receiver, slow, stop=stop, receive_wait_s=0).run()
print(f"stopped handled={handled} settled={len(receiver.settled)}", flush=True)
"""


def test_sigterm_finishes_the_current_message_then_stops_cleanly() -> None:
    process = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "handling"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "stopped handled=1 settled=1" in out  # the message in hand was finished and settled, no new one taken


def test_receive_failures_are_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.errors import InfrastructureError
    from orchestrator.trigger import worker

    monkeypatch.setattr(worker, "RECEIVE_BACKOFF_S", 0.0)

    class Flaky(FakeReceiver):
        calls = 0

        def receive_messages(self, max_message_count: int = 1, max_wait_time: float | None = None) -> list[Received]:
            self.calls += 1
            raise ConnectionError("network down")

    receiver = Flaky()
    with pytest.raises(InfrastructureError, match="10 failures in a row"):
        Worker(receiver, lambda raw: completed(), receive_wait_s=0).run()
    assert receiver.calls == worker.MAX_RECEIVE_FAILURES
