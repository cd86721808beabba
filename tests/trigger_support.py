"""Builders and fakes shared by the trigger's tests (no tests here): notebook repositories as local bare git
repositories made in tmp folders, kick_off messages, a controllable clock, and fakes for the trigger's seams
(scheduled enqueue, Key Vault). Named for what they do (docs/architecture.md#one-client-factory, docs/architecture.md#tiny-named-test-data)."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devops.context import Secret
from orchestrator.trigger.handlers import handle
from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.outcome import Outcome
from orchestrator.trigger.scheduling import OutgoingMessage
from orchestrator.trigger.secret_store import secret_name_for
from orchestrator.trigger.services import Services
from orchestrator.trigger.settings import TriggerSettings
from tests.builders import make_notebook
from tests.conftest_devops import FAST
from tests.devops_server import DevOpsServer

START = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
VAULT = "https://orchestrator-test.vault.azure.net/"
SIGNING_KEY = Secret("test-signing-key-" + "5" * 32)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeScheduler:
    """Keeps scheduled messages; `due(clock)` hands back those whose time has come, as the queue would."""

    scheduled: list[tuple[OutgoingMessage, datetime]] = field(default_factory=list)
    delivered: int = 0

    def schedule(self, message: OutgoingMessage, at: datetime) -> None:
        self.scheduled.append((message, at))

    def due(self, now: datetime) -> list[RawMessage]:
        ready = [(m, at) for m, at in self.scheduled[self.delivered:] if at <= now]
        self.delivered += len(ready)
        # Service Bus hands application properties to azure-servicebus with bytes keys (docs/devops-protocol.md#message-properties).
        return [RawMessage(message_id=m.message_id, body=m.body_bytes,
                           properties={k.encode(): v.encode() for k, v in m.properties.items()}) for m, _at in ready]


@dataclass
class FakeSecrets:
    values: dict[str, str] = field(default_factory=dict)
    expiry: dict[str, datetime] = field(default_factory=dict)
    read: list[str] = field(default_factory=list)      # every name asked for, in order
    deleted: list[str] = field(default_factory=list)

    def put(self, name: str, value: str, *, expires_on: datetime) -> None:
        self.values[name] = value
        self.expiry[name] = expires_on

    def get(self, name: str) -> str | None:
        self.read.append(name)
        return self.values.get(name)

    def delete(self, name: str) -> None:
        self.deleted.append(name)
        self.values.pop(name, None)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@dataclass
class NotebookRepo:
    """A working repository and the bare repository it pushes to (what a message names)."""

    work: Path
    bare: Path

    def commit(self, message: str = "change") -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", str(self.bare), "HEAD:refs/heads/main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


def notebook_repo(root: Path, notebooks: dict[str, str], plan: str | None = None) -> tuple[NotebookRepo, str]:
    """A repository with `notebooks` (path -> one cell's source) and an optional orchestrator.yml; returns it
    with its first commit."""
    work, bare = root / "work", root / "bare.git"
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", ".", cwd=work)
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    for path, source in notebooks.items():
        make_notebook(work / path, source)
    if plan is not None:
        (work / "orchestrator.yml").write_text(plan, encoding="utf-8")
    repo = NotebookRepo(work, bare)
    return repo, repo.commit("notebooks")


def kick_off_body(url: str, commit: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"job": "kick_off", "version": 1,
                            "repository": {"url": url, "commit": commit, "ref": "refs/heads/main"},
                            "plan": "orchestrator.yml", "build": {"id": "1234", "number": "20261126.3"}}
    body.update(overrides)
    return body


def raw(body: dict[str, Any] | bytes | str, properties: dict[Any, Any], *, attempt: int = 1,
        message_id: str = "m-1") -> RawMessage:
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return RawMessage(message_id=message_id, body=data, properties=properties, attempt=attempt)


def make_services(tmp_path: Path, *, backend: str = "azureml", allow_local: bool = True, clock: Clock | None = None,
                  scheduler: FakeScheduler | None = None, secrets: FakeSecrets | None = None,
                  **settings: Any) -> Services:
    # Snapshots kept: the fake MLClient reloads a job from YAML that points at them (the service keeps its copy).
    values: dict[str, Any] = dict(key_vault_url=VAULT, state_dir=tmp_path / "state", work_dir=tmp_path / "work",
                                  snapshot_dir=tmp_path / "snapshots",
                                  fetch_timeout_s=60.0, signing_key=SIGNING_KEY)
    values.update(settings)
    return Services(settings=TriggerSettings(**values), backend=backend, allow_local=allow_local,
                    clock=clock or Clock(), devops_policy=FAST, scheduler=scheduler or FakeScheduler(),
                    secrets=secrets or FakeSecrets(), out=None)


def task_completed(server: DevOpsServer) -> list[dict[str, Any]]:
    return server.task_completed_events()


def task_log(server: DevOpsServer) -> str:
    """Everything appended to the plan's logs, as text."""
    return "\n".join(bytes(log["content"]).decode("utf-8") for log in server.plan.logs.values())


@pytest.fixture
def fake_ml() -> Iterator[Any]:
    """The fake MLClient at the Azure ML client factory: no test can reach Azure."""
    pytest.importorskip("azure.ai.ml")
    from orchestrator.azureml.client import set_client_factory
    from tests.fake_mlclient import FakeMLClient

    client = FakeMLClient()
    previous = set_client_factory(client.factory)
    yield client
    set_client_factory(previous)


# A kick_off handled on the Azure ML path, then its wrap_up checks (the watchdog and signing tests).
PLAN = "version: 1\nexperiment: watchdog-demo\nnotebooks:\n  - glob: 'nb/*.ipynb'\n"
INTERVAL = 600.0


class Watched:
    """A submitted pipeline, its services (clock, scheduler) and a way to run its next due check."""

    def __init__(self, tmp_path: Path, server: DevOpsServer, ml: Any, **settings: Any) -> None:
        repo, commit = notebook_repo(tmp_path / "repo", {"nb/a.ipynb": "x = 1", "nb/b.ipynb": "y = 2"}, PLAN)
        self.clock = Clock()
        self.scheduler = FakeScheduler()
        self.secrets = FakeSecrets()
        self.services: Services = make_services(tmp_path, clock=self.clock, scheduler=self.scheduler,
                                                secrets=self.secrets, watchdog_interval_s=INTERVAL, **settings)
        self.server, self.ml, self.tmp = server, ml, tmp_path
        outcome = handle(raw(kick_off_body(str(repo.bare), commit), server.message_properties()), self.services)
        assert outcome.action == "complete", outcome
        [self.name] = ml.jobs.created
        self.secret = secret_name_for(f"{server.plan_id}/{server.job_id}/{server.task_id}")
        assert set(self.secrets.values) == {self.secret}

    def next_check(self, *, after: float = INTERVAL) -> Outcome:
        self.clock.advance(after)
        due = self.scheduler.due(self.clock.now)
        assert len(due) == 1, f"expected one due check, got {len(due)}"
        return handle(due[0], self.services)

    def last_scheduled(self) -> dict[str, Any]:
        return self.scheduler.scheduled[-1][0].body

    def status(self, status: str) -> None:
        self.ml.jobs.records[self.name].statuses = []
        self.ml.jobs.records[self.name].status = status


def wrapped(text: str) -> bytes:
    """The body as PublishToAzureServiceBus sends it by default: DataContractSerializer, binary XML (docs/devops-protocol.md#message-body-encoding)."""
    namespace = b"http://schemas.microsoft.com/2003/10/Serialization/"
    data = text.encode("utf-8")
    return b"@\x06string\x08" + bytes([len(namespace)]) + namespace + b"\x9b" + struct.pack("<H", len(data)) + data


def via_function(data: bytes, properties: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    pytest.importorskip("azure.functions")  # the `trigger` extra
    from azure.functions.servicebus import ServiceBusMessage

    from orchestrator.trigger import function_blueprint

    seen: list[Outcome] = []
    services = make_services(tmp_path, allow_local=False)
    monkeypatch.setattr(function_blueprint, "function_services", lambda: services)

    def spy(raw: RawMessage, services: Any) -> Outcome:
        seen.append(handle(raw, services))
        return seen[-1]

    monkeypatch.setattr(function_blueprint, "handle", spy)
    message = ServiceBusMessage(body=data, message_id="bad-1", application_properties=dict(properties),
                                user_properties={}, delivery_count=1)
    assert function_blueprint.orchestrator_queue.build().get_user_function()(message) is None  # no crash, no retry
    return seen[0]
