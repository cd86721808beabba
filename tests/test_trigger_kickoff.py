"""kick_off on Azure ML, through `handlers.handle`: a local bare repository (allow_local), the fake MLClient at
the client factory, fakes for Key Vault and the scheduler, the strict DevOps server. No kernels."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from orchestrator.trigger.handlers import handle
from orchestrator.trigger.secret_store import secret_name_for
from tests.devops_server import DevOpsServer
from tests.trigger_support import (
    Clock,
    FakeScheduler,
    FakeSecrets,
    kick_off_body,
    make_services,
    notebook_repo,
    raw,
    task_log,
)

pytest.importorskip("azure.ai.ml")

PLAN = "version: 1\nexperiment: trigger-demo\nnotebooks:\n  - glob: 'nb/*.ipynb'\n"


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Any, str]:
    return notebook_repo(tmp_path / "repo", {"nb/a.ipynb": "x = 1", "nb/b.ipynb": "y = 2"}, PLAN)


def test_a_kick_off_submits_one_pipeline_stores_the_token_by_name_links_studio_and_schedules_the_watchdog(
        tmp_path: Path, repo: tuple[Any, str], fake_ml: Any, devops_server: DevOpsServer) -> None:
    bare, commit = repo[0].bare, repo[1]
    services = make_services(tmp_path)
    outcome = handle(raw(kick_off_body(str(bare), commit, only=["nb/a.ipynb"], parameters={"epochs": 2}),
                         devops_server.message_properties()), services)
    assert outcome.action == "complete", outcome
    assert outcome.run_status == "submitted"
    [name] = fake_ml.jobs.created
    job = fake_ml.jobs.records[name].job
    # only + parameters applied: one notebook node (plus the report node), with the message's parameter.
    nodes = {n for n in job.jobs if n != "orchestrator_report"}
    assert nodes == {"nb_a"}
    assert json.loads(str(job.jobs["nb_a"].inputs["parameters"]._data).removeprefix("json:")) == {"epochs": 2}
    # The token went to the secret store under a name derived from the ids, and nowhere into the job.
    secret = secret_name_for(f"{devops_server.plan_id}/{devops_server.job_id}/{devops_server.task_id}")
    assert isinstance(services.secrets, FakeSecrets) and services.secrets.values == {secret: devops_server.token}
    body = fake_ml.jobs.bodies[name]
    assert devops_server.token not in body and secret in body and "orchestrator-test.vault.azure.net" in body
    # The watchdog's first check, one interval from now, carrying no token.
    assert isinstance(services.scheduler, FakeScheduler)
    [(check, at)] = services.scheduler.scheduled
    assert check.body["job"] == "wrap_up" and check.body["check"] == 1 and "azureml_job" not in check.body
    assert (at - services.now()).total_seconds() == services.settings.watchdog_interval_s
    assert "AuthToken" not in check.properties and devops_server.token not in json.dumps(check.body)
    # The studio link is on the job's live feed; nothing closed the task yet (the report node will).
    feed = [line for call in devops_server.calls("feed") for line in call.json["value"]]
    assert any(name in line and "https://ml.azure.com/runs/" in line for line in feed)
    assert devops_server.task_completed_events() == []


def test_the_same_ids_twice_start_one_pipeline(tmp_path: Path, repo: tuple[Any, str], fake_ml: Any,
                                               devops_server: DevOpsServer) -> None:
    services = make_services(tmp_path)
    body = kick_off_body(str(repo[0].bare), repo[1])
    first = handle(raw(body, devops_server.message_properties(), message_id="m-1"), services)
    # A second message with the same PlanId/JobId/TaskInstanceId (a duplicate publish, a redelivery).
    second = handle(raw(body, devops_server.message_properties(), message_id="m-2"), services)
    assert first.action == second.action == "complete"
    assert "not submitted again" in second.detail
    assert len(fake_ml.jobs.created) == 1
    assert isinstance(services.scheduler, FakeScheduler) and len(services.scheduler.scheduled) == 1
    assert devops_server.task_completed_events() == []


def test_a_cancelled_devops_job_starts_nothing(tmp_path: Path, repo: tuple[Any, str], fake_ml: Any,
                                               devops_server: DevOpsServer) -> None:
    devops_server.cancel_job()
    outcome = handle(raw(kick_off_body(str(repo[0].bare), repo[1]), devops_server.message_properties()),
                     make_services(tmp_path))
    assert outcome.action == "complete" and "nothing started" in outcome.detail
    assert fake_ml.jobs.created == [] and devops_server.task_completed_events() == []


def test_an_invalid_plan_in_the_repository_is_refused_and_the_job_closed_with_its_problems(
        tmp_path: Path, fake_ml: Any, devops_server: DevOpsServer) -> None:
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"}, "version: 1\nnotebooks:\n  - path: nope.ipynb\n")
    outcome = handle(raw(kick_off_body(str(repo.bare), commit), devops_server.message_properties()),
                     make_services(tmp_path))
    assert outcome.action == "dead_letter" and "plan orchestrator.yml" in outcome.reason
    assert "nope.ipynb" in outcome.description and str(tmp_path) not in outcome.description
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed"
    assert "nope.ipynb" in task_log(devops_server) and fake_ml.jobs.created == []


def test_without_a_key_vault_setting_the_message_is_refused_as_a_configuration_problem(
        tmp_path: Path, repo: tuple[Any, str], fake_ml: Any, devops_server: DevOpsServer) -> None:
    outcome = handle(raw(kick_off_body(str(repo[0].bare), repo[1]), devops_server.message_properties()),
                     make_services(tmp_path, key_vault_url=None))
    assert outcome.action == "dead_letter" and "ORCHESTRATOR_KEY_VAULT_URL" in outcome.reason
    assert outcome.exit_code == 3
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed" and "ORCHESTRATOR_KEY_VAULT_URL" in task_log(devops_server)


def test_the_job_token_reaches_no_log_line_no_file_no_message_and_no_pipeline(
        tmp_path: Path, repo: tuple[Any, str], fake_ml: Any, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.devops_server import allow_loopback, isolate_sdk_caches


    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    caplog.set_level(logging.DEBUG)
    token = "tok-RECOGNISABLE-" + "7" * 24
    clock, scheduler, secrets = Clock(), FakeScheduler(), FakeSecrets()
    services = make_services(tmp_path, clock=clock, scheduler=scheduler, secrets=secrets)
    with DevOpsServer(token=token) as server:
        outcomes = [handle(raw(kick_off_body(str(repo[0].bare), repo[1]), server.message_properties()), services)]
        [name] = fake_ml.jobs.created
        fake_ml.jobs.finish(name, status="Canceled", running_polls=0)  # nothing ran: the backstop reports it
        clock.advance(services.settings.watchdog_interval_s)
        outcomes += [handle(due, services) for due in scheduler.due(clock.now)]
        # And refusals: one with the token echoed inside the body itself.
        outcomes.append(handle(raw(kick_off_body(f"https://x:{token}@dev.azure.com/o/_git/r", repo[1]),
                                   server.message_properties()), services))
        outcomes.append(handle(raw(b"{" + token.encode(), server.message_properties()), services))
        assert [len(server.task_completed_events())] == [1]
        logs = "\n".join(bytes(log["content"]).decode() for log in server.plan.logs.values())
    assert token not in logs
    assert [o.action for o in outcomes] == ["complete", "complete", "dead_letter", "dead_letter"]
    assert not [o for o in outcomes if token in f"{o.reason} {o.description} {o.detail}"]
    assert not [r.getMessage() for r in caplog.records if token in r.getMessage()]
    assert not [m for m, _at in scheduler.scheduled if token in json.dumps([m.body, m.properties])]
    assert token not in fake_ml.jobs.bodies[name]
    # Only the vault held it, and only until the watchdog saw the job closed.
    assert list(secrets.expiry) == secrets.deleted and secrets.values == {}
    assert [str(p) for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()] == []


def test_handle_with_the_azureml_backend_uses_the_seams_factories(
        tmp_path: Path, repo: tuple[Any, str], fake_ml: Any, devops_server: DevOpsServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from orchestrator.trigger.commands import handle_command
    from orchestrator.trigger.scheduling import set_scheduler_factory
    from orchestrator.trigger.secret_store import set_secret_store_factory

    scheduler, secrets = FakeScheduler(), FakeSecrets()
    previous = set_scheduler_factory(lambda settings: scheduler), set_secret_store_factory(lambda settings: secrets)
    try:
        monkeypatch.setenv("ORCHESTRATOR_KEY_VAULT_URL", "https://v.vault.azure.net/")
        monkeypatch.setenv("ORCHESTRATOR_SIGNING_KEY", "s" * 40)
        monkeypatch.setenv("ORCHESTRATOR_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
        path = tmp_path / "m.json"
        path.write_text(json.dumps({"message_id": "m", "body": kick_off_body(str(repo[0].bare), repo[1]),
                                    "application_properties": devops_server.message_properties()}))
        done = CliRunner().invoke(handle_command, [str(path), "--backend", "azureml", "--allow-local-repos"])
    finally:
        set_scheduler_factory(previous[0])
        set_secret_store_factory(previous[1])
    assert done.exit_code == 0, done.output
    assert "handled: pipeline" in done.output and len(fake_ml.jobs.created) == 1
    assert len(scheduler.scheduled) == 1 and len(secrets.values) == 1


def test_wait_for_completion_false_runs_publishes_and_sends_no_callback(
        tmp_path: Path, repo: tuple[Any, str], fake_ml: Any, devops_server: DevOpsServer,
        caplog: pytest.LogCaptureFixture) -> None:
    # PublishToAzureServiceBus with waitForCompletion: false completes its task (succeeded) once it has sent.
    devops_server.task_record().update(state="completed", result="succeeded")
    clock, scheduler, secrets = Clock(), FakeScheduler(), FakeSecrets()
    services = make_services(tmp_path, clock=clock, scheduler=scheduler, secrets=secrets)
    with caplog.at_level("WARNING", logger="orchestrator.trigger"):
        outcome = handle(raw(kick_off_body(str(repo[0].bare), repo[1]), devops_server.message_properties()), services)
    assert outcome.action == "complete" and outcome.run_status == "submitted", outcome
    assert any("waitForCompletion: false" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    [name] = fake_ml.jobs.created
    hook = fake_ml.jobs.bodies[name]
    assert "collection_url" in hook and "PlanId" not in hook  # the report node publishes, closes nothing
    [(check, _at)] = scheduler.scheduled
    assert check.body["callback"] is False
    # The watchdog sees the pipeline to its end without reading the token or touching DevOps, then drops it.
    requests = len(devops_server.requests)
    fake_ml.jobs.finish(name, status="Completed", running_polls=0)
    clock.advance(services.settings.watchdog_interval_s)
    [due] = scheduler.due(clock.now)
    done = handle(due, services)
    assert done.action == "complete" and "waitForCompletion: false" in done.detail
    assert len(devops_server.requests) == requests and devops_server.task_completed_events() == []
    assert secrets.read == [] and secrets.deleted == list(secrets.expiry)
