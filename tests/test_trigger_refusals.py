"""Messages that cannot be understood or acted on (docs/architecture.md#queue-messages): each is dead-lettered with a reason a person can
read, and its waiting DevOps job is closed as failed with that reason in its log: exactly one TaskCompleted.

The table runs through `handlers.handle` (as the worker and `orchestrator handle` call it, properties with
bytes keys as azure-servicebus gives them) and through the Function (a constructed azure.functions message,
str keys), against the strict DevOps server. No kernels, no Azure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.trigger.handlers import handle
from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.outcome import Outcome
from tests.devops_server import DevOpsServer
from tests.trigger_support import kick_off_body, make_services, task_log, via_function, wrapped

URL = "https://dev.azure.com/org/proj/_git/repo"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def body(**overrides: Any) -> dict[str, Any]:
    return kick_off_body(URL, COMMIT, **overrides)


def repository(**fields: Any) -> dict[str, Any]:
    return {"url": URL, "commit": COMMIT, "ref": "refs/heads/main", **fields}


# (case, body (dict, text or bytes), words the reason or its description must contain)
BAD: list[tuple[str, Any, tuple[str, ...]]] = [
    ("invalid JSON", b'{"job": "kick_off", "version": 1,', ("not a JSON object",)),
    ("wrapped invalid JSON", wrapped('{"job": kick_off}'), ("not a JSON object",)),
    ("a JSON list", b"[1, 2, 3]", ("not a JSON object",)),
    ("empty body", b"  ", ("empty",)),
    ("not UTF-8", b"\xff\xfe\x00garbage", ("not a JSON object",)),
    ("unknown job", body(job="explode"), ("body.job", "'explode'", "kick_off, wrap_up")),
    ("missing job", {"version": 1}, ("body.job", "missing")),
    ("version as text", body(version="1"), ("body.version",)),
    ("version 2", body(version=2), ("body.version",)),
    ("only as a string", body(only="examples/**"), ("body.only", "list")),
    ("parameters as a list", body(parameters=[1]), ("body.parameters",)),
    ("commit as a number", body(repository=repository(commit=123)), ("body.repository.commit",)),
    ("commit not hex", body(repository=repository(commit="main")), ("body.repository.commit", "hexadecimal")),
    ("repository missing", {"job": "kick_off", "version": 1}, ("body.repository", "missing")),
    ("a typo'd key", body(onyl=["a.ipynb"]), ("body.onyl", "unknown key")),
    ("option-like ref", body(repository=repository(ref="--upload-pack=touch /tmp/x")), ("body.repository.ref",)),
    ("file:// URL", body(repository=repository(url="file:///srv/repos/notebooks.git")), ("file:///srv", "local")),
    ("ssh:// URL", body(repository=repository(url="ssh://git@dev.azure.com/v3/org/proj/repo")), ("ssh://",)),
    ("scp-like URL", body(repository=repository(url="git@ssh.dev.azure.com:v3/org/proj/repo")), ("scp-like",)),
    ("option-like URL", body(repository=repository(url="--upload-pack=touch /tmp/pwned")), ("command-line option",)),
    ("remote helper URL", body(repository=repository(url="ext::sh")), ("remote helper",)),
    ("host not allowed", body(repository=repository(url="https://evil.example.com/repo.git")),
     ("evil.example.com", "ORCHESTRATOR_ALLOWED_HOSTS")),
    ("credentials in URL", body(repository=repository(url="https://me:hunter2@dev.azure.com/org/_git/r")),
     ("credentials",)),
    ("plain http", body(repository=repository(url="http://dev.azure.com/org/proj/_git/repo")), ("https",)),
    ("local path", body(repository=repository(url="/srv/repos/notebooks.git")), ("--allow-local-repos",)),
    ("only escaping the repository", body(only=["../../etc/*"]), ("body.only", "inside the repository")),
    ("only absolute", body(only=["/etc/passwd"]), ("body.only", "absolute")),
    ("plan escaping the repository", body(plan="../orchestrator.yml"), ("body.plan", "inside the repository")),
    ("wrapped, valid JSON, refused URL", wrapped(json.dumps(body(repository=repository(url="file:///x")))),
     ("file:///x",)),
]


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def via_handle(data: bytes, properties: dict[str, Any], tmp_path: Path) -> Outcome:
    # azure-servicebus hands keys and string values as bytes (docs/devops-protocol.md#message-properties).
    props = {k.encode(): v.encode() if isinstance(v, str) else v for k, v in properties.items()}
    return handle(RawMessage(message_id="bad-1", body=data, properties=props), make_services(tmp_path, allow_local=False))


@pytest.mark.parametrize("front", ["handle", "function"])
@pytest.mark.parametrize(("case", "payload", "words"), BAD, ids=[case for case, _p, _w in BAD])
def test_a_bad_message_is_dead_lettered_with_a_readable_reason_and_its_job_closed_once(
        case: str, payload: Any, words: tuple[str, ...], front: str, tmp_path: Path,
        devops_server: DevOpsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    properties = devops_server.message_properties()
    data = _as_bytes(payload)
    outcome = (via_handle(data, properties, tmp_path) if front == "handle"
               else via_function(data, properties, tmp_path, monkeypatch))
    assert outcome.action == "dead_letter", outcome
    said = f"{outcome.reason} {outcome.description}"
    for word in words:
        assert word in said, f"{word!r} not in {said!r}"
    assert outcome.exit_code == 2
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed"
    log = task_log(devops_server)
    assert outcome.reason in log and "Nothing was run" in log
    assert devops_server.token not in said and devops_server.token not in log
    assert "hunter2" not in said and "hunter2" not in log  # a password in a refused URL is never echoed


def test_an_oversized_body_is_refused_before_it_is_decoded(tmp_path: Path, devops_server: DevOpsServer) -> None:
    data = json.dumps(body(parameters={"blob": "x" * 70_000})).encode()
    outcome = via_handle(data, devops_server.message_properties(), tmp_path)
    assert outcome.action == "dead_letter" and "over the limit of 65536" in outcome.reason
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed" and "ORCHESTRATOR_MAX_BODY_BYTES" in task_log(devops_server)


@pytest.mark.parametrize("missing", ["PlanId", "AuthToken", "TaskInstanceId"])
def test_missing_or_empty_properties_are_named_and_nothing_can_be_closed(
        missing: str, tmp_path: Path, devops_server: DevOpsServer) -> None:
    properties = devops_server.message_properties()
    properties[missing] = ""
    outcome = via_handle(json.dumps(body()).encode(), properties, tmp_path)
    assert outcome.action == "dead_letter" and "properties" in outcome.reason
    assert f"application_properties.{missing}" in outcome.description
    assert devops_server.task_completed_events() == []  # no job can be named without it


def test_no_properties_at_all_and_a_bad_body_names_both(tmp_path: Path) -> None:
    outcome = handle(RawMessage(message_id="m", body=b"{]", properties={}), make_services(tmp_path))
    assert outcome.action == "dead_letter" and "not a JSON object" in outcome.reason
    assert "application_properties.PlanUrl" in outcome.description


def test_a_duplicate_of_a_refused_message_does_not_close_the_job_twice(
        tmp_path: Path, devops_server: DevOpsServer) -> None:
    data = json.dumps(body(job="explode")).encode()
    first = via_handle(data, devops_server.message_properties(), tmp_path)
    second = via_handle(data, devops_server.message_properties(), tmp_path)
    assert first.action == second.action == "dead_letter"
    assert len(devops_server.task_completed_events()) == 1


def test_a_refusal_that_cannot_reach_devops_is_redelivered_then_dead_lettered_at_the_limit(
        tmp_path: Path, devops_server: DevOpsServer) -> None:
    data = json.dumps(body(job="explode")).encode()
    props = devops_server.message_properties()
    devops_server.fail("events", 503, times=100)
    services = make_services(tmp_path, max_deliveries=3)
    outcomes = [handle(RawMessage(message_id="m", body=data, properties=props, attempt=n), services) for n in (1, 2, 3)]
    assert [o.action for o in outcomes] == ["abandon", "abandon", "dead_letter"]
    assert "could not be closed" in outcomes[-1].description
    assert devops_server.task_completed_events() == []


WRAPPABLE = [(case, payload, words) for case, payload, words in BAD if not isinstance(payload, bytes)]


@pytest.mark.parametrize(("case", "payload", "words"), WRAPPABLE, ids=[case for case, _p, _w in WRAPPABLE])
def test_each_bad_message_wrapped_by_the_data_contract_serializer_ends_the_same_way(
        case: str, payload: Any, words: tuple[str, ...], tmp_path: Path,
        devops_server: DevOpsServer) -> None:
    # PublishToAzureServiceBus's default (useDataContractSerializer: true) wraps the same text in binary XML.
    outcome = via_handle(wrapped(json.dumps(payload)), devops_server.message_properties(), tmp_path)
    assert outcome.action == "dead_letter", outcome
    said = f"{outcome.reason} {outcome.description}"
    assert all(word in said for word in words), said
    assert [e["result"] for e in devops_server.task_completed_events()] == ["failed"]
