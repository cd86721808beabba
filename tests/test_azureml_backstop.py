"""The Event Grid backstop (issue 9): a pipeline whose report node never runs still gets its report, one DevOps
test run and one TaskCompleted, whatever order the backstop's events and the watchdog come in; events for other
runs are dismissed from the event alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from orchestrator.azureml.backstop import EVENT_TYPE, RunStatusChanged, parse_body  # noqa: E402
from orchestrator.trigger.events import is_event_grid  # noqa: E402
from orchestrator.trigger.handlers import handle  # noqa: E402
from orchestrator.trigger.intake import RawMessage  # noqa: E402
from tests.devops_server import DevOpsServer  # noqa: E402
from tests.emulator_support import kicked_off_without_report_node  # noqa: E402
from tests.trigger_support import make_services, raw  # noqa: E402

COMPILED = {"orchestrator": "0.1", "plan": "orchestrator.yml", "repository": "https://example/repo"}


def event(run_id: str, status: str, tags: dict[str, str], *, event_id: str = "e-1") -> dict[str, Any]:
    """A RunStatusChanged event in the Event Grid schema (docs/azureml.md#run-status-events)."""
    return {"id": event_id, "eventType": EVENT_TYPE, "subject": f"experiments/x/runs/{run_id}",
            "eventTime": "2026-12-03T12:00:00Z", "dataVersion": "2", "metadataVersion": "1",
            "topic": "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w",
            "data": {"experimentId": "x", "experimentName": "watched", "runId": run_id, "runType": "azureml.PipelineRun",
                     "runStatus": status, "runTags": tags, "runProperties": {}}}


def delivered(body: dict[str, Any], *, message_id: str = "eg-1") -> RawMessage:
    """As Event Grid delivers to a Service Bus queue: the event as the body, aeg-* application properties."""
    return RawMessage(message_id=message_id, body=json.dumps(body).encode(),
                      properties={"aeg-event-type": "Notification", "aeg-subscription-name": "ORCHESTRATOR"})


class NoAzure:
    def __call__(self, options: Any = None) -> Any:
        raise AssertionError("a dismissed event must not reach Azure ML")


@pytest.fixture
def no_azure() -> Any:
    from orchestrator.azureml.client import set_client_factory

    previous = set_client_factory(NoAzure())
    yield
    set_client_factory(previous)


@pytest.mark.parametrize(("body", "why"), [
    (event("child", "Completed", {"step": "a", "notebook": "a.ipynb"}), "not a pipeline compiled by orchestrator"),
    (event("other", "Failed", {"team": "else"}), "not a pipeline compiled by orchestrator"),
    (event("ours", "Running", COMPILED), "not finished"),
    ({**event("ours", "Completed", COMPILED), "eventType": "Microsoft.Storage.BlobCreated"}, "not an Azure ML"),
])
def test_events_for_other_runs_are_dismissed_from_the_event_alone(no_azure: None, tmp_path: Path, body: dict[str, Any],
                                                                  why: str) -> None:
    outcome = handle(delivered(body), make_services(tmp_path))
    assert outcome.action == "complete" and why in outcome.detail, outcome


def test_an_event_grid_body_that_is_not_json_is_dead_lettered(no_azure: None, tmp_path: Path) -> None:
    message = RawMessage(message_id="x", body=b"{not json", properties={"aeg-event-type": "Notification"})
    outcome = handle(message, make_services(tmp_path))
    assert outcome.action == "dead_letter" and "not JSON" in outcome.reason


def test_the_event_schema_is_read_and_queue_messages_are_not_taken_for_events() -> None:
    parsed = parse_body(json.dumps([event("job1", "Failed", COMPILED)]).encode())  # a webhook's array of one
    assert isinstance(parsed, RunStatusChanged)
    assert (parsed.run_id, parsed.run_status, parsed.run_type) == ("job1", "Failed", "azureml.PipelineRun")
    assert parsed.dismissal() is None
    assert is_event_grid(RawMessage(message_id="m", body=json.dumps(event("j", "Failed", {})).encode()))
    assert not is_event_grid(raw({"job": "wrap_up", "eventType": "x"}, {}))


@pytest.mark.slow
def test_a_pipeline_whose_report_node_never_ran_gets_one_report_one_test_run_one_task_completed(
        tmp_path: Path, devops_server: DevOpsServer) -> None:
    """The backstop first (events twice and out of order), the watchdog after it: one test run, one TaskCompleted."""
    from mlflow.tracking import MlflowClient

    with kicked_off_without_report_node(tmp_path, devops_server.message_properties()) as pipeline:
        workspace, services, name = pipeline.workspace, pipeline.services, pipeline.name
        tags = dict(workspace.jobs.get(name).tags)
        finished, running = event(name, "Failed", tags, event_id="e-2"), event(name, "Running", tags, event_id="e-1")
        first = handle(delivered(finished), services)
        assert first.action == "complete" and "by the backstop: test run" in first.detail, first
        again = handle(delivered(finished, message_id="eg-2"), services)  # at least once: the same event twice
        late = handle(delivered(running, message_id="eg-0"), services)  # out of order: an older status last
        assert again.action == "complete" and late.action == "complete" and "not finished" in late.detail
        assert "nothing left to do" in pipeline.watchdog().detail

        assert len(devops_server.runs) == 1, devops_server.runs
        [completed] = devops_server.task_completed_events()
        assert str(completed["result"]).lower() == "failed"
        # The report where a user of the job looks: the pipeline run's artifacts.
        tracking = MlflowClient(tracking_uri=workspace.tracking.uri)
        local = Path(tracking.download_artifacts(str(workspace.state(name).run_id), "report", str(tmp_path / "dl")))
        stored = json.loads((local / "results.json").read_text())
        assert {s["step"]: s["status"] for s in stored["steps"]} == {"nb_a": "passed", "nb_b": "failed"}
        assert stored["reported_by"] == "Event Grid backstop"
        assert (local / "report.html").is_file() and (local / "devops.json").is_file()


@pytest.mark.slow
def test_a_scheduled_pipeline_and_a_studio_clone_of_it_are_reported_by_their_events(tmp_path: Path) -> None:
    """A schedule has no watchdog and no --wait: the event is its only backstop; nor has a job cloned and submitted
    again in studio (its node is reused: same run_key). The schedule fires with its trigger time as the run key.
    No DevOps routing here (tests/test_azureml_publish.py has a clone with it)."""
    from mlflow.tracking import MlflowClient

    from orchestrator.azureml.client import set_client_factory
    from orchestrator.azureml.emulator import Assumptions, EmulatedWorkspace
    from tests.builders import make_notebook
    from tests.emulator_support import scheduled_run

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "orchestrator.yml").write_text("version: 1\nexperiment: nightly\nnotebooks:\n  - glob: '*.ipynb'\n")
    make_notebook(repo / "a.ipynb", "x = 1")
    workspace = EmulatedWorkspace(tmp_path / "workspace", assumptions=Assumptions(finalize_never=True))
    previous = set_client_factory(workspace.factory)
    try:
        name = scheduled_run(workspace, repo, tmp_path / "snapshots")
        assert workspace.state(name).status == "Completed"
        # The schedule's trigger time is the run key (`${{creation_context.trigger_time}}`), on the job and its nodes.
        assert workspace.jobs.get(name).inputs["run_key"]._data == "2026-01-31T02:00:00Z"
        tracking = MlflowClient(tracking_uri=workspace.tracking.uri)
        node_run = tracking.get_run(str(workspace.state(name).children["a"].run_id))
        assert node_run.data.tags["orchestrator.run_key"] == "2026-01-31T02:00:00Z"
        body = event(name, "Completed", dict(workspace.jobs.get(name).tags))
        outcome = handle(delivered(body), make_services(tmp_path))
        assert outcome.action == "complete" and "no DevOps routing" in outcome.detail, outcome
        local = Path(tracking.download_artifacts(str(workspace.state(name).run_id), "report", str(tmp_path / "dl")))
        stored = json.loads((local / "results.json").read_text())
        assert [(s["step"], s["status"]) for s in stored["steps"]] == [("a", "passed")]
        assert tracking.get_run(str(workspace.state(name).run_id)).data.tags["orchestrator.status"] == "passed"

        clone = workspace.studio_clone(name)
        assert workspace.wait(clone, timeout=300) == "Completed" and workspace.state(clone).children["a"].reused_from
        outcome = handle(delivered(event(clone, "Completed", dict(workspace.jobs.get(clone).tags))),
                         make_services(tmp_path))
        assert outcome.action == "complete" and "no DevOps routing" in outcome.detail, outcome
        local = Path(tracking.download_artifacts(str(workspace.state(clone).run_id), "report", str(tmp_path / "c")))
        stored = json.loads((local / "results.json").read_text())
        assert [(s["step"], s["status"]) for s in stored["steps"]] == [("a", "passed")]
    finally:
        set_client_factory(previous)
        workspace.close()


def test_the_backstop_publishes_nothing_once_the_server_job_is_closed_or_its_token_gone(
        devops_server: DevOpsServer) -> None:
    """The watchdog-first order, without a pipeline: what the backstop checks before publishing."""
    from orchestrator.azureml.backstop import server_job_over
    from tests.conftest_devops import FAST

    routing = {k: v for k, v in devops_server.message_properties().items() if k != "AuthToken"}
    config = {"key_vault_url": "https://v.vault.azure.net/", "token_secret": "job-token", "properties": routing}

    def vault(config: Any) -> Any:
        return lambda name: devops_server.token

    def emptied(config: Any) -> Any:
        def get(name: str) -> str:
            raise LookupError(f"Key Vault secret {name!r} is not there")
        return get

    assert server_job_over(config, vault, FAST) is None  # open: the backstop reports
    assert "no longer in Key Vault" in str(server_job_over(config, emptied, FAST))
    devops_server.task_record().update(state="completed", result="succeeded")  # closed by the watchdog
    assert "already closed" in str(server_job_over(config, vault, FAST))
    assert server_job_over({"key_vault_url": "x", "token_secret": "t", "collection_url": "c"}, vault, FAST) is None
