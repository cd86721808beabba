"""The production seams, without a network: the Service Bus scheduler builds the scheduled message it should
(no token, deterministic id), the connection comes from the setting it names, Key Vault gets an expiring
secret. Constructing azure-servicebus clients contacts nothing; sending is replaced by recorders."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from orchestrator.trigger import scheduling, secret_store
from orchestrator.trigger.scheduling import OutgoingMessage, ServiceBusScheduler, servicebus_client
from orchestrator.trigger.secret_store import KeyVaultSecretStore, secret_name_for
from orchestrator.trigger.settings import ConfigurationError, TriggerSettings

AT = datetime(2026, 11, 26, 10, 10, tzinfo=timezone.utc)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get_queue_sender(self, queue: str) -> Recorder:
        self.calls.append(("sender", queue, None))
        return self

    def schedule_messages(self, message: Any, at: datetime) -> list[int]:
        self.calls.append(("schedule", message, at))
        return [1]


def test_the_scheduler_enqueues_the_wrap_up_at_its_time_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("azure.servicebus")
    recorder = Recorder()
    monkeypatch.setattr(scheduling, "servicebus_client", lambda settings: recorder)
    message = OutgoingMessage("wrap-up-abc-1", {"job": "wrap_up", "check": 1}, {"PlanId": "p", "JobId": "j"})
    ServiceBusScheduler(TriggerSettings(queue_name="notebooks")).schedule(message, AT)
    [(_, queue, _), (_, sent, at)] = recorder.calls
    assert queue == "notebooks" and at == AT
    assert sent.message_id == "wrap-up-abc-1" and sent.content_type == "application/json"
    assert sent.application_properties == {"PlanId": "p", "JobId": "j"}
    assert b"".join(sent.body) == message.body_bytes == b'{"check":1,"job":"wrap_up"}'  # the bytes signed


def test_a_scheduled_message_refuses_to_carry_the_token() -> None:
    with pytest.raises(ValueError, match="never carries the job token"):
        OutgoingMessage("m", {}, {"AuthToken": "tok"})


def test_the_connection_comes_from_the_setting_it_names() -> None:
    pytest.importorskip("azure.servicebus")
    settings = TriggerSettings(connection_setting="MY_BUS")
    with pytest.raises(ConfigurationError, match="MY_BUS"):
        servicebus_client(settings, {})
    connection = "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0"
    client = servicebus_client(settings, {"MY_BUS": connection})  # constructing contacts nothing
    assert client.fully_qualified_namespace == "example.servicebus.windows.net"
    client.close()


def test_key_vault_gets_an_expiring_secret_under_the_derived_name(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []

    class Client:
        def set_secret(self, name: str, value: str, **kwargs: Any) -> None:
            calls.append((name, value, kwargs))

    store = KeyVaultSecretStore("https://v.vault.azure.net/")
    monkeypatch.setattr(store, "_client", lambda: Client())
    name = secret_name_for("plan/job/task")
    store.put(name, "tok", expires_on=AT)
    assert calls == [(name, "tok", {"expires_on": AT, "content_type": secret_store.CONTENT_TYPE})]
    assert name.startswith("devops-job-token-") and len(name) <= 127 and name.replace("-", "").isalnum()
    assert secret_name_for("plan/job/task") == name != secret_name_for("plan/job/other")


@pytest.mark.parametrize("purge", ["allowed", "refused"])
def test_key_vault_deletes_and_purges_a_token_when_it_may(purge: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    calls: list[tuple[str, str]] = []

    class Poller:
        def wait(self) -> None:
            calls.append(("waited", ""))

    class Client:
        def begin_delete_secret(self, name: str) -> Poller:
            calls.append(("delete", name))
            if name == "gone":
                raise ResourceNotFoundError("no such secret")
            return Poller()

        def purge_deleted_secret(self, name: str) -> None:
            calls.append(("purge", name))
            if purge == "refused":
                raise HttpResponseError("Forbidden: purge not permitted")

    store = KeyVaultSecretStore("https://v.vault.azure.net/")
    monkeypatch.setattr(store, "_client", lambda: Client())
    store.delete("devops-job-token-1")   # a refused purge leaves it soft-deleted, without an error
    store.delete("gone")                 # deleted already: nothing more to do
    assert calls == [("delete", "devops-job-token-1"), ("waited", ""), ("purge", "devops-job-token-1"),
                     ("delete", "gone")]


def test_the_default_secret_store_needs_a_key_vault_setting() -> None:
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_KEY_VAULT_URL"):
        secret_store.default_factory(TriggerSettings())
