"""Where the DevOps context comes from: message properties (bytes keys), message files (plain or
DataContract-wrapped bodies), an agent job's environment, options."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from orchestrator.devops.context import DevOpsContext, Secret, token_from_file
from orchestrator.devops.http import parse_retry_after
from orchestrator.devops.message import decode_body, read_message_file
from orchestrator.errors import InvalidInputError
from tests.conftest_devops import BODY

PROPS = {"PlanUrl": "https://dev.azure.com/org/", "ProjectId": "p-1", "HubName": "build", "PlanId": "plan-1",
         "JobId": "job-1", "TimelineId": "tl-1", "TaskInstanceName": "PublishToAzureServiceBus",
         "TaskInstanceId": "task-1", "AuthToken": "s3cret"}


def wrapped(text: str, *, code: int = 0x99) -> bytes:
    """`messageBody` as PublishToAzureServiceBus sends it by default: .NET binary XML ([MC-NBFX])."""
    namespace = b"http://schemas.microsoft.com/2003/10/Serialization/"
    data = text.encode("utf-8")
    width = {0x99: "<B", 0x9B: "<H", 0x9D: "<I"}[code]
    return (b"@\x06string\x08" + bytes([len(namespace)]) + namespace + bytes([code]) + struct.pack(width, len(data))
            + data)


def test_properties_with_bytes_keys_and_values_make_a_server_task_context() -> None:
    props = {k.encode(): v.encode() for k, v in PROPS.items()}
    context = DevOpsContext.from_properties(props, BODY)
    assert context.collection_url == "https://dev.azure.com/org"
    assert context.project == "p-1" and context.token.reveal() == "s3cret"
    assert context.build_id == "1234" and context.build_number == "20261126.3" and context.commit == "abc123"
    assert context.task is not None and context.task.key == "plan-1/job-1/task-1"
    assert context.task.hub_name == "build"


def test_missing_properties_are_all_named_at_once() -> None:
    props = {k: v for k, v in PROPS.items() if k not in ("PlanId", "AuthToken")}
    props["JobId"] = " "
    with pytest.raises(InvalidInputError) as caught:
        DevOpsContext.from_properties(props, where="msg.json")
    text = str(caught.value)
    assert "application_properties.PlanId" in text and "application_properties.AuthToken" in text
    assert "application_properties.JobId" in text and "msg.json" in text


def test_the_token_never_shows_in_repr_or_str() -> None:
    context = DevOpsContext.from_properties(PROPS, BODY)
    assert "s3cret" not in repr(context) and "s3cret" not in str(context) and "s3cret" not in f"{context.token}"
    assert repr(Secret("x")) == "Secret('***')"


@pytest.mark.parametrize("length", [50, 123, 300, 70000])
def test_a_data_contract_wrapped_body_is_unwrapped(length: int) -> None:
    # 123 = 0x7B = "{": the length byte that fools a slice-from-the-first-brace decoder (docs/devops-protocol.md#message-body-encoding).
    text = json.dumps({"job": "kick_off", "pad": ""})
    text = text[:-2] + "x" * (length - len(text)) + '"}'
    assert len(text) == length
    code = 0x99 if length < 256 else 0x9B if length < 65536 else 0x9D
    assert decode_body(wrapped(text, code=code))["job"] == "kick_off"


def test_a_plain_body_is_read_as_is() -> None:
    assert decode_body(json.dumps(BODY).encode())["build"]["id"] == "1234"
    with pytest.raises(ValueError):
        decode_body(b"[1, 2]")


def test_a_message_file_with_a_wrapped_body(tmp_path: Path) -> None:
    path = tmp_path / "message.json"
    path.write_text(json.dumps({"message_id": "m-1", "application_properties": PROPS,
                                "body_base64": base64.b64encode(wrapped(json.dumps(BODY))).decode()}))
    assert read_message_file(path).message_id == "m-1"
    context = DevOpsContext.from_message_file(path)
    assert context.build_id == "1234" and context.task is not None and context.source == "message"


def test_a_message_file_with_a_body_as_text_or_object(tmp_path: Path) -> None:
    for body in (BODY, json.dumps(BODY)):
        path = tmp_path / "m.json"
        path.write_text(json.dumps({"message_id": "m", "application_properties": PROPS, "body": body}))
        assert DevOpsContext.from_message_file(path).repository_url == BODY["repository"]["url"]


@pytest.mark.parametrize("content, says", [
    ("{not json", "cannot be read as JSON"),
    (json.dumps({"body": "[1]", "application_properties": PROPS}), "body"),
    (json.dumps({"body": {}, "body_base64": "", "application_properties": PROPS}), "not both"),
    (json.dumps({"body_base64": "!!!", "application_properties": PROPS}), "body_base64"),
    (json.dumps({"body": {}, "application_properties": []}), "application_properties"),
])
def test_a_bad_message_file_is_invalid_input_saying_where(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError) as caught:
        DevOpsContext.from_message_file(path)
    assert says in str(caught.value) and str(path) in str(caught.value)


def test_an_agent_job_environment_makes_a_context_without_a_task() -> None:
    env = {"SYSTEM_ACCESSTOKEN": "tok", "SYSTEM_COLLECTIONURI": "https://dev.azure.com/org/",
           "SYSTEM_TEAMPROJECTID": "p-9", "BUILD_BUILDID": "42", "BUILD_SOURCEVERSION": "def456",
           "SYSTEM_STAGENAME": "s", "SYSTEM_STAGEATTEMPT": "1"}
    context = DevOpsContext.from_environment(env)
    assert context.task is None and context.build_id == "42" and context.commit == "def456"
    assert context.pipeline is not None and context.pipeline.stage_name == "s" and context.pipeline.stage_attempt == 1
    with pytest.raises(InvalidInputError) as caught:
        DevOpsContext.from_environment({"SYSTEM_COLLECTIONURI": "https://dev.azure.com/org/"})
    assert "SYSTEM_ACCESSTOKEN" in str(caught.value) and "SYSTEM_TEAMPROJECTID" in str(caught.value)


def test_options_and_a_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    context = DevOpsContext.from_options(collection_url="https://dev.azure.com/org/", project="proj",
                                         token=token_from_file(token_file), build_id="5")
    assert context.token.reveal() == "from-file" and context.task is None
    with pytest.raises(InvalidInputError):
        token_from_file(tmp_path / "missing")


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
