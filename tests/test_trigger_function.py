"""The Azure Function: the blueprint's handler unwrapped (`build().get_user_function()`) and called with
constructed `azure.functions` Service Bus messages; its binding; the function app and host.json."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest

func = pytest.importorskip("azure.functions")  # the `trigger` extra

from orchestrator.trigger import function_blueprint  # noqa: E402
from orchestrator.trigger.services import Services  # noqa: E402
from tests.devops_server import DevOpsServer  # noqa: E402
from tests.trigger_support import (  # noqa: E402
    FakeScheduler,
    FakeSecrets,
    kick_off_body,
    make_services,
    notebook_repo,
    task_log,
)
FUNCTIONAPP = Path(__file__).resolve().parents[1] / "functionapp"


def message(body: bytes, properties: dict[str, Any], *, delivery_count: int = 1, message_id: str = "f-1") -> Any:
    from azure.functions.servicebus import ServiceBusMessage

    return ServiceBusMessage(body=body, message_id=message_id, application_properties=properties,
                             user_properties={}, delivery_count=delivery_count)


def wrapped(text: str) -> bytes:
    namespace = b"http://schemas.microsoft.com/2003/10/Serialization/"
    data = text.encode("utf-8")
    return b"@\x06string\x08" + bytes([len(namespace)]) + namespace + b"\x9b" + struct.pack("<H", len(data)) + data


def user_function() -> Any:
    return function_blueprint.orchestrator_queue.build().get_user_function()


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Services:
    built = make_services(tmp_path, allow_local=True)  # a local bare repository stands in for Azure Repos
    monkeypatch.setattr(function_blueprint, "function_services", lambda: built)
    return built


def test_the_binding_names_the_connection_setting_and_the_queue_setting() -> None:
    bindings = json.loads(function_blueprint.orchestrator_queue.build().get_function_json())["bindings"]
    assert bindings == [{"direction": "IN", "type": "serviceBusTrigger", "name": "message",
                         "connection": "ORCHESTRATOR_SERVICEBUS", "queueName": "%ORCHESTRATOR_QUEUE%"}]


def test_a_wrapped_kick_off_with_str_keys_submits_one_pipeline_and_returns(
        tmp_path: Path, services: Services, fake_ml: Any, devops_server: DevOpsServer) -> None:
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    body = wrapped(json.dumps(kick_off_body(str(repo.bare), commit, plan=".")))
    assert user_function()(message(body, devops_server.message_properties())) is None
    assert len(fake_ml.jobs.created) == 1
    # Delivered again (at least once): returns, and still one pipeline.
    assert user_function()(message(body, devops_server.message_properties(), delivery_count=2)) is None
    assert len(fake_ml.jobs.created) == 1 and devops_server.task_completed_events() == []


def test_a_transient_failure_is_redelivered_later_and_later_then_closes_the_job_at_the_limit(
        tmp_path: Path, services: Services, fake_ml: Any, devops_server: DevOpsServer) -> None:
    from azure.core.exceptions import ServiceRequestError

    from orchestrator.trigger.signing import SIGNATURE_PROPERTY

    def unreachable(name: str) -> Any:
        raise ServiceRequestError("connection refused")

    fake_ml.jobs.get = unreachable  # an Azure ML outage longer than the whole chain
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    body = wrapped(json.dumps(kick_off_body(str(repo.bare), commit, plan=".")))
    scheduler = services.scheduler
    assert isinstance(scheduler, FakeScheduler)
    # Each failed delivery returns (the host completes it) after scheduling the next, twice as late.
    assert user_function()(message(body, devops_server.message_properties())) is None
    for _ in range(services.settings.max_deliveries - 1):
        copy, _at = scheduler.scheduled[-1]
        assert "AuthToken" not in copy.properties and SIGNATURE_PROPERTY in copy.properties
        assert devops_server.token not in json.dumps([copy.body, copy.properties])
        assert user_function()(message(copy.body_bytes, dict(copy.properties))) is None
    now = services.now()
    assert [(at - now).total_seconds() for _m, at in scheduler.scheduled] == [30.0, 60.0, 120.0, 240.0]
    assert [m.properties["OrchestratorAttempt"] for m, _at in scheduler.scheduled] == ["2", "3", "4", "5"]
    # The last delivery gave up: the job is closed as failed, once, and nothing more is scheduled.
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed" and "gave up after 5 deliveries" in task_log(devops_server)
    assert len(scheduler.scheduled) == 4 and fake_ml.jobs.created == []
    # The token the copies read from Key Vault goes with the refusal: nothing will need it again.
    assert isinstance(services.secrets, FakeSecrets) and len(services.secrets.deleted) == 1
    assert services.secrets.values == {}


def test_when_the_next_delivery_cannot_be_scheduled_the_message_is_abandoned(
        tmp_path: Path, services: Services, fake_ml: Any, devops_server: DevOpsServer) -> None:
    from azure.core.exceptions import ServiceRequestError

    def unreachable(*args: Any) -> Any:
        raise ServiceRequestError("connection refused")

    fake_ml.jobs.get = unreachable
    services.scheduler.schedule = unreachable  # type: ignore[method-assign,union-attr]  # Service Bus is down too
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    body = json.dumps(kick_off_body(str(repo.bare), commit, plan=".")).encode()
    with pytest.raises(function_blueprint.RedeliveryRequested, match="cannot reach Azure ML"):
        user_function()(message(body, devops_server.message_properties()))
    assert devops_server.task_completed_events() == []


def test_a_refusal_returns_and_is_logged_at_error_with_its_reason(
        services: Services, devops_server: DevOpsServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="orchestrator.trigger"):
        assert user_function()(message(b"not json", devops_server.message_properties())) is None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("dead-letter" in e and "not a JSON object" in e for e in errors)
    assert len(devops_server.task_completed_events()) == 1


def test_function_services_come_from_the_app_settings_and_never_allow_local_repositories(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_ALLOWED_HOSTS", "dev.azure.com, github.com")
    monkeypatch.setenv("ORCHESTRATOR_KEY_VAULT_URL", "https://v.vault.azure.net/")
    monkeypatch.setenv("ORCHESTRATOR_MAX_DELIVERIES", "7")
    built = function_blueprint.function_services()
    assert built.settings.allowed_hosts == ("dev.azure.com", "github.com")
    assert built.settings.max_deliveries == 7 and built.backend == "azureml" and built.allow_local is False


def test_malformed_app_settings_are_all_reported() -> None:
    from orchestrator.errors import InvalidInputError
    from orchestrator.trigger.settings import TriggerSettings

    with pytest.raises(InvalidInputError) as caught:
        TriggerSettings.from_environ({"ORCHESTRATOR_MAX_DELIVERIES": "0", "ORCHESTRATOR_ALLOWED_HOSTS": "https://x/y",
                                      "ORCHESTRATOR_REPORT_IDENTITY": "root"})
    text = str(caught.value)
    assert "ORCHESTRATOR_MAX_DELIVERIES" in text and "ORCHESTRATOR_ALLOWED_HOSTS" in text
    assert "ORCHESTRATOR_REPORT_IDENTITY" in text


def test_the_function_app_registers_the_blueprint() -> None:
    spec = importlib.util.spec_from_file_location("function_app", FUNCTIONAPP / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The Event Grid backstop (docs/azureml.md#run-status-events) beside the Service Bus function.
    assert sorted(f.get_function_name() for f in module.app.get_functions()) == ["orchestrator_queue",
                                                                                 "orchestrator_run_status"]
    bindings = json.loads(function_blueprint.orchestrator_run_status.build().get_function_json())["bindings"]
    assert bindings == [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}]


def test_host_json_settles_after_the_function_and_renews_locks_longer_than_it_may_run() -> None:
    host = json.loads((FUNCTIONAPP / "host.json").read_text())
    service_bus = host["extensions"]["serviceBus"]
    assert service_bus["autoCompleteMessages"] is True  # return = complete, raise = abandon (the only Python mode)
    assert service_bus["prefetchCount"] == 0 and service_bus["maxConcurrentCalls"] == 1

    def seconds(text: str) -> int:
        h, m, s = (int(float(part)) for part in text.split(":"))
        return h * 3600 + m * 60 + s

    assert seconds(service_bus["maxAutoLockRenewalDuration"]) > seconds(host["functionTimeout"])
    requirements = (FUNCTIONAPP / "requirements.txt").read_text()
    assert "azure-functions" in requirements and "[azureml,devops,trigger]" in requirements
    ignored = (FUNCTIONAPP / ".funcignore").read_text().split()
    assert "tests" in ignored and ".venv" in ignored and "local.settings.json" in ignored
    example = json.loads((FUNCTIONAPP / "local.settings.example.json").read_text())["Values"]
    assert example["FUNCTIONS_WORKER_RUNTIME"] == "python" and "ORCHESTRATOR_SERVICEBUS" in example


def test_malformed_app_settings_refuse_each_message_and_close_its_job_instead_of_failing(
        monkeypatch: pytest.MonkeyPatch, devops_server: DevOpsServer) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_DELIVERIES", "many")
    body = json.dumps(kick_off_body("https://dev.azure.com/o/p/_git/r", "0" * 40)).encode()
    assert user_function()(message(body, devops_server.message_properties())) is None
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed"
    assert "ORCHESTRATOR_MAX_DELIVERIES" in "".join(bytes(log["content"]).decode()
                                                    for log in devops_server.plan.logs.values())


def test_missing_required_settings_are_named_in_one_startup_line(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator.trigger.settings import REQUIRED, startup_line

    for _shown, names in REQUIRED:
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCHESTRATOR_SERVICEBUS__fullyQualifiedNamespace", "bus.servicebus.windows.net")
    monkeypatch.setenv("ORCHESTRATOR_KEY_VAULT_URL", "https://v.vault.azure.net/")  # also holds the signing key
    with caplog.at_level("INFO", logger="orchestrator.trigger"):
        importlib.reload(function_blueprint)  # what the host does when it indexes the app
    [line] = [r for r in caplog.records if "starting" in r.getMessage()]
    assert line.levelname == "ERROR"
    text = line.getMessage()
    assert "ORCHESTRATOR_QUEUE" in text and "AZUREML_ARM_WORKSPACE_NAME" in text
    assert "ORCHESTRATOR_SERVICEBUS;" not in text and "ORCHESTRATOR_KEY_VAULT_URL;" not in text
    assert "ORCHESTRATOR_SIGNING_KEY" not in text
    full = {"ORCHESTRATOR_SERVICEBUS": "Endpoint=sb://x/", "ORCHESTRATOR_QUEUE": "q", "ORCHESTRATOR_SIGNING_KEY": "k",
            "ORCHESTRATOR_KEY_VAULT_URL": "https://v.vault.azure.net/", "ORCHESTRATOR_WORKSPACE_CONFIG": "c.json"}
    assert startup_line("worker", full) == (True, "worker starting: every required app setting is set")
    ready, text = startup_line("worker", {k: v for k, v in full.items() if k != "ORCHESTRATOR_SIGNING_KEY"
                                          and k != "ORCHESTRATOR_KEY_VAULT_URL"})
    assert not ready and "ORCHESTRATOR_SIGNING_KEY" in text and "ORCHESTRATOR_KEY_VAULT_URL" in text
