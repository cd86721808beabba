"""Forged and tampered messages (orchestrator/trigger/signing.py): a wrap_up is believed only with the trigger's
own signature over its body and properties, and names no job or secret itself; anything else is dead-lettered
with a reason, no secret is read, no Azure ML job looked at, and nothing reaches the strict DevOps server or
the second server playing the attacker's host."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devops.context import Secret
from orchestrator.trigger.handlers import handle
from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.outcome import Outcome
from orchestrator.trigger.scheduling import OutgoingMessage
from orchestrator.trigger.signing import SIGNATURE_PROPERTY, sign
from tests.devops_server import AttackerServer, DevOpsServer
from tests.trigger_support import PLAN, FakeSecrets, Watched, kick_off_body, make_services, notebook_repo, raw


ATTACKER_KEY = Secret("an-attacker-key-that-is-long-enough-000")


@pytest.fixture
def attacker() -> Iterator[AttackerServer]:
    with AttackerServer() as server:
        yield server


@pytest.fixture
def watched(tmp_path: Path, devops_server: DevOpsServer, fake_ml: Any,
            monkeypatch: pytest.MonkeyPatch) -> Watched:
    # Only the strict server's origin, port included, is allowed: the attacker listens on another port.
    monkeypatch.setenv("ORCHESTRATOR_DEVOPS_HOSTS", devops_server.host)
    return Watched(tmp_path, devops_server, fake_ml)


def first_check(watched: Watched) -> OutgoingMessage:
    [(message, _at)] = watched.scheduler.scheduled
    return message


def deliver(watched: Watched, body: bytes, properties: dict[str, Any]) -> Outcome:
    # As azure-servicebus hands them over: bytes keys and values.
    return handle(RawMessage(message_id="forged", body=body, properties={k.encode(): str(v).encode()
                                                                         for k, v in properties.items()}),
                  watched.services)


def assert_nothing_touched(watched: Watched, outcome: Outcome, requests_before: int, *words: str) -> None:
    assert outcome.action == "dead_letter", outcome
    said = f"{outcome.reason} {outcome.description}"
    for word in words:
        assert word in said, f"{word!r} not in {said!r}"
    assert watched.secrets.read == []                       # no job token (nor anything else) read
    assert watched.ml.jobs.gets == 0 and watched.ml.jobs.cancelled == []
    assert len(watched.server.requests) == requests_before  # the named job is not even closed
    assert watched.scheduler.scheduled[1:] == []            # and no next check was scheduled


def forge(watched: Watched, **property_changes: Any) -> tuple[bytes, dict[str, Any]]:
    message = first_check(watched)
    return message.body_bytes, {**message.properties, **property_changes}


def unsigned(properties: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in properties.items() if k != SIGNATURE_PROPERTY}


def reset(watched: Watched) -> int:
    watched.secrets.read.clear()
    watched.ml.jobs.gets = 0
    return len(watched.server.requests)


def test_the_genuine_check_is_signed_and_believed(watched: Watched) -> None:
    message = first_check(watched)
    assert message.properties[SIGNATURE_PROPERTY].startswith("v1=")
    assert not {"azureml_job", "token_secret", "key"} & set(message.body)
    watched.status("Running")
    assert watched.next_check().action == "complete"
    assert len(watched.scheduler.scheduled) == 2


def tampered(watched: Watched, change: str) -> tuple[bytes, dict[str, Any]]:
    body, properties = forge(watched)
    if change == "no signature":
        del properties[SIGNATURE_PROPERTY]
    elif change == "another job's ids":   # point the watchdog at another team's task, secret and pipeline
        properties.update(PlanId="other-plan", JobId="other-job", TaskInstanceId="other-task")
    elif change == "another body":        # ask for the pipeline to be cancelled at once
        data = json.loads(body)
        data["closing"] = True
        body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    elif change == "another key":
        message = sign(replace(first_check(watched), properties=unsigned(properties)), ATTACKER_KEY)
        body, properties = message.body_bytes, message.properties
    elif change == "a v1 body naming secrets":  # the old format: the body chose the secret and the job
        data = json.loads(body)
        data.update(version=1, key="a/b/c", azureml_job="their-pipeline", token_secret="their-secret")
        body = json.dumps(data).encode()
    return body, properties


# (how the check was changed, words the refusal must contain). One watched pipeline for all: nothing may change it.
TAMPERED = [
    ("no signature", ("not believed", f"no {SIGNATURE_PROPERTY}")),
    ("another job's ids", ("not believed", "does not match")),
    ("another body", ("not believed", "does not match")),
    ("another key", ("not believed", "does not match")),
    ("a v1 body naming secrets", ("body.token_secret: unknown key", "body.azureml_job: unknown key")),
]


def test_unsigned_and_tampered_checks_are_refused_and_touch_nothing(watched: Watched) -> None:
    for change, words in TAMPERED:
        before = reset(watched)
        outcome = deliver(watched, *tampered(watched, change))
        assert_nothing_touched(watched, outcome, before, *words)
        assert outcome.exit_code == 2, change


def test_a_forged_check_sending_the_token_elsewhere_reaches_no_host(watched: Watched, attacker: AttackerServer) -> None:
    before = reset(watched)
    body, properties = forge(watched, PlanUrl=attacker.url)   # signature left as it was
    outcome = deliver(watched, body, properties)
    assert_nothing_touched(watched, outcome, before, "callback host is not allowed")
    # Re-signed with another key, the host check still comes first.
    message = sign(OutgoingMessage("forged", json.loads(body), unsigned(properties)), ATTACKER_KEY)
    outcome = deliver(watched, message.body_bytes, message.properties)
    assert_nothing_touched(watched, outcome, before, "callback host is not allowed")
    assert attacker.received == []


def test_the_signing_key_can_come_from_key_vault_and_its_absence_is_named(
        tmp_path: Path, devops_server: DevOpsServer, fake_ml: Any) -> None:
    repo, commit = notebook_repo(tmp_path / "repo", {"nb/a.ipynb": "x = 1"}, PLAN)
    secrets = FakeSecrets(values={"orchestrator-signing-key": "k" * 40})
    services = make_services(tmp_path, secrets=secrets, signing_key=None)
    outcome = handle(raw(kick_off_body(str(repo.bare), commit), devops_server.message_properties()), services)
    assert outcome.action == "complete", outcome
    [(check, _at)] = services.scheduler.scheduled  # type: ignore[union-attr]
    resigned = sign(replace(check, properties=unsigned(check.properties)), Secret("k" * 40))
    assert check.properties[SIGNATURE_PROPERTY] == resigned.properties[SIGNATURE_PROPERTY]

    # No key anywhere: the kick_off is refused before anything is submitted, naming both ways to set one.
    fake_ml.jobs.created.clear()
    bare = make_services(tmp_path / "second", secrets=FakeSecrets(), signing_key=None)
    outcome = handle(raw(kick_off_body(str(repo.bare), commit), devops_server.message_properties()), bare)
    assert outcome.action == "dead_letter" and outcome.exit_code == 3
    assert "ORCHESTRATOR_SIGNING_KEY" in outcome.reason and "orchestrator-signing-key" in outcome.reason
    assert fake_ml.jobs.created == [] and bare.scheduler.scheduled == []  # type: ignore[union-attr]
    assert [e["result"] for e in devops_server.task_completed_events()] == ["failed"]
