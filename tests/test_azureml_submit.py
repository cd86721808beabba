"""Submission through the client factory (a fake MLClient), idempotency, waiting, the backstop report and
reruns; workspace resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from orchestrator.azureml import client as client_module  # noqa: E402
from orchestrator.azureml.backend import SUBMITTED, AzureMLBackend  # noqa: E402
from orchestrator.azureml.client import WorkspaceOptions, resolve_workspace  # noqa: E402
from orchestrator.azureml.commands import rerun_azureml  # noqa: E402
from orchestrator.azureml.compile import REPORT_NODE, CompileOptions  # noqa: E402
from orchestrator.azureml.names import job_name_for_key  # noqa: E402
from orchestrator.azureml.submit import azure_errors, submit_plan  # noqa: E402
from orchestrator.backends import RunOptions  # noqa: E402
from orchestrator.errors import InfrastructureError, InvalidInputError  # noqa: E402
from orchestrator.progress import PlainProgress  # noqa: E402
from tests.fake_mlclient import FakeMLClient, conflict  # noqa: E402
from tests.azureml_support import examples_plan, make_repo  # noqa: E402


@pytest.fixture
def plan(tmp_path: Path) -> Any:
    return examples_plan(make_repo(tmp_path / "repo"))


def backend(tmp_path: Path, **kwargs: Any) -> AzureMLBackend:
    return AzureMLBackend(compile_options=CompileOptions(cache_dir=tmp_path / "cache"), poll_s=0, **kwargs)


def options(tmp_path: Path, *, wait: bool, run_id: str = "20261126-100000-abcdef") -> RunOptions:
    run_dir = tmp_path / "run"
    (run_dir / "steps").mkdir(parents=True, exist_ok=True)
    return RunOptions(run_dir=run_dir, run_id=run_id, wait=wait)


def result_folder(root: Path, step: str, notebook: str, status: str, **extra: Any) -> Path:
    folder = root / step
    folder.mkdir(parents=True)
    result = {"schema": 1, "step": step, "notebook": notebook, "status": status, "duration_s": 1.5, "attempts": 1,
              "started_at": "2026-11-26T10:00:00Z", "finished_at": "2026-11-26T10:00:02Z", **extra}
    (folder / "result.json").write_text(json.dumps(result))
    (folder / (Path(notebook).stem + ".ipynb")).write_text("{}")
    return folder


def test_without_wait_it_submits_one_job_and_records_it(fake: FakeMLClient, plan: Any, tmp_path: Path) -> None:
    outcome = backend(tmp_path).run(plan, options(tmp_path, wait=False), PlainProgress())
    assert outcome.status == SUBMITTED
    assert fake.jobs.created == [job_name_for_key("20261126-100000-abcdef")]
    info = outcome.results.to_json()["azureml"]
    assert info["job_name"] == fake.jobs.created[0] and info["studio_url"].startswith("https://ml.azure.com/runs/")
    assert info["run_key"] == "20261126-100000-abcdef"  # a new run: nothing reused
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == SUBMITTED
    submitted = fake.jobs.records[fake.jobs.created[0]].job
    assert submitted.settings.on_finalize == REPORT_NODE


def test_the_same_key_twice_starts_one_job(fake: FakeMLClient, plan: Any, tmp_path: Path) -> None:
    client = client_module.get_client()
    first = submit_plan(client, plan, key="PlanId=7;JobId=8;TaskInstanceId=9",
                        options=CompileOptions(cache_dir=tmp_path / "cache"))
    second = submit_plan(client, plan, key="PlanId=7;JobId=8;TaskInstanceId=9",
                         options=CompileOptions(cache_dir=tmp_path / "cache"))
    assert first.created and not second.created
    assert first.name == second.name and fake.jobs.created == [first.name]


def test_a_submission_racing_another_with_the_same_key_returns_the_others_job(
        fake: FakeMLClient, plan: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.azureml.submit as submit_module
    from orchestrator.azureml.compile import compile_plan
    from orchestrator.azureml.validation import validate

    client = client_module.get_client()
    other = submit_plan(client, plan, key="race", options=CompileOptions(cache_dir=tmp_path / "cache"))
    job = compile_plan(plan, CompileOptions(cache_dir=tmp_path / "cache"))
    validate(job)
    # This submitter looked before the other one created the job; then its own create is refused.
    real_find = submit_module.find_job
    lookups: list[str] = []

    def late_find(client: Any, name: str) -> Any:
        lookups.append(name)
        return None if len(lookups) == 1 else real_find(client, name)

    monkeypatch.setattr(submit_module, "find_job", late_find)
    fake.jobs.fail_create_with = conflict()
    again = submit_module.submit_job(client, job, key="race")
    assert not again.created and again.name == other.name and fake.jobs.created == [other.name]


def test_wait_uses_the_report_nodes_output_when_there_is_one(fake: FakeMLClient, plan: Any, tmp_path: Path) -> None:
    report = tmp_path / "report-output"
    steps_dir = report / "steps"
    result_folder(steps_dir, "data_00_prepare", "data/00_prepare.ipynb", "passed")
    (report / "results.json").write_text(json.dumps({
        "schema": 1, "run_id": "mlflow-run", "backend": "azureml", "status": "passed", "counts": {"passed": 1},
        "steps": [json.loads((steps_dir / "data_00_prepare" / "result.json").read_text())]}))
    (report / "report.html").write_text("<html></html>")
    name = job_name_for_key("20261126-100000-abcdef")
    original_create = fake.jobs.create_or_update

    def create_then_finish(job: Any, **kwargs: Any) -> Any:
        created = original_create(job, **kwargs)
        fake.jobs.finish(name, steps={"data_00_prepare": ("Completed", None)}, report=report)
        return created

    fake.jobs.create_or_update = create_then_finish  # type: ignore[method-assign]
    outcome = backend(tmp_path).run(plan, options(tmp_path, wait=True), PlainProgress())
    assert outcome.status == "passed"
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run_id"] == "20261126-100000-abcdef" and results["azureml"]["job_name"] == name
    assert (run_dir / "steps" / "data_00_prepare" / "result.json").is_file()


def test_wait_builds_the_report_here_when_the_report_node_left_none(fake: FakeMLClient, plan: Any,
                                                                    tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    name = job_name_for_key("20261126-100000-abcdef")
    steps = {
        "data_00_prepare": ("Failed", result_folder(outputs, "data_00_prepare", "data/00_prepare.ipynb", "failed",
                                                    error={"kind": "cell_error", "ename": "ValueError"})),
        "models_02_train": ("Completed", result_folder(outputs, "models_02_train", "models/02_train.ipynb", "passed",
                                                       metrics={"accuracy": 0.97})),
        "models_03_serverless": ("Failed", None),  # failed before writing anything (image build, mount, ...)
        # recommenders_01_similarity comes after the failed step: Azure ML never starts it.
        # gpu_05_gpu: never started either (the pipeline was cancelled before it got a GPU).
    }
    original_create = fake.jobs.create_or_update

    def create_then_finish(job: Any, **kwargs: Any) -> Any:
        created = original_create(job, **kwargs)
        fake.jobs.finish(name, status="Failed", steps=steps, report=None, running_polls=2)
        return created

    fake.jobs.create_or_update = create_then_finish  # type: ignore[method-assign]
    lines: list[str] = []

    class Lines(PlainProgress):
        def _line(self, text: str) -> None:
            lines.append(text)

    outcome = backend(tmp_path).run(plan, options(tmp_path, wait=True), Lines())
    assert outcome.status == "failed"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    by_step = {s["step"]: s for s in results["steps"]}
    assert [s["step"] for s in results["steps"]] == [s.id for s in plan.steps]  # every expected step, in order
    assert by_step["data_00_prepare"]["status"] == "failed"
    assert by_step["models_02_train"]["metrics"] == {"accuracy": 0.97}
    assert by_step["models_03_serverless"]["error"]["ename"] == "StepFailed"
    assert by_step["recommenders_01_similarity"]["status"] == "skipped"
    assert "data/00_prepare.ipynb" in by_step["recommenders_01_similarity"]["reason"]
    assert by_step["gpu_05_gpu"]["status"] == "error" and by_step["gpu_05_gpu"]["error"]["ename"] == "NotStarted"
    assert by_step["scratch_wip"] == {**by_step["scratch_wip"], "status": "skipped", "reason": "work in progress"}
    assert results["reported_by"].startswith("backstop")
    assert (tmp_path / "run" / "steps" / "models_02_train" / "02_train.ipynb").is_file()
    assert any("step=data_00_prepare status=failed" in line for line in lines)
    assert any(line.startswith("run status=failed") for line in lines)


def finished_job(fake: FakeMLClient, plan: Any, tmp_path: Path, *, run_key: str) -> str:
    client = client_module.get_client()
    submitted = submit_plan(client, plan, key="original", options=CompileOptions(cache_dir=tmp_path / "cache",
                                                                                 run_key=run_key))
    fake.jobs.finish(submitted.name, status="Failed", steps={"data_00_prepare": ("Failed", None)})
    return submitted.name


def test_rerun_failed_resubmits_the_same_graph_with_the_same_run_key(fake: FakeMLClient, plan: Any,
                                                                    tmp_path: Path) -> None:
    original = finished_job(fake, plan, tmp_path, run_key="nightly-1")
    outcome = rerun_azureml(original, failed=True, out=tmp_path / "rerun")
    assert outcome.status == SUBMITTED
    assert len(fake.jobs.created) == 2
    first, again = (fake.jobs.records[name].job for name in fake.jobs.created)
    assert again.inputs["run_key"]._data == "nightly-1"  # completed nodes are reused
    assert set(again.jobs) == set(first.jobs) and again.settings.on_finalize == REPORT_NODE
    assert again.settings.force_rerun is False and again.tags["rerun_of"] == original
    assert again.jobs["data_00_prepare"].component.command == first.jobs["data_00_prepare"].component.command


def test_rerun_without_failed_gets_a_new_run_key(fake: FakeMLClient, plan: Any, tmp_path: Path) -> None:
    original = finished_job(fake, plan, tmp_path, run_key="nightly-1")
    rerun_azureml(original, failed=False, out=tmp_path / "rerun")
    again = fake.jobs.records[fake.jobs.created[-1]].job
    assert again.inputs["run_key"]._data not in ("nightly-1", None)


def test_rerun_of_a_missing_job_is_an_input_error(fake: FakeMLClient) -> None:
    with pytest.raises(InvalidInputError, match="no such job"):
        rerun_azureml("nope", failed=True)


def test_azure_errors_become_orchestrator_errors() -> None:
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    with pytest.raises(InfrastructureError, match="refused the credentials"):
        with azure_errors("submitting"):
            raise ClientAuthenticationError("no token")
    with pytest.raises(InfrastructureError, match="cannot reach Azure ML"):
        with azure_errors("submitting"):
            raise ServiceRequestError("dns")


def test_job_names_from_keys_are_deterministic_and_valid() -> None:
    import re

    name = job_name_for_key("PlanId=0f8/JobId=1a;Task=Ü")
    assert name == job_name_for_key("PlanId=0f8/JobId=1a;Task=Ü") != job_name_for_key("PlanId=0f8/JobId=1b;Task=Ü")
    assert re.match(r"^[a-z][a-z0-9_]{0,254}$", name)


# ------------------------------------------------------------------------------------- workspace resolution


def test_workspace_from_options_then_environment_then_config_json(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "sub-cfg", "resource_group": "rg-cfg", "workspace_name": "ws-cfg"}))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    env = {"AZURE_SUBSCRIPTION_ID": "sub-env"}
    workspace = resolve_workspace(WorkspaceOptions(workspace_name="ws-opt"), env)
    assert (workspace.subscription_id, workspace.resource_group, workspace.workspace_name) == ("sub-env", "rg-cfg", "ws-opt")
    inside_a_job = {"AZUREML_ARM_SUBSCRIPTION": "s", "AZUREML_ARM_RESOURCEGROUP": "r", "AZUREML_ARM_WORKSPACE_NAME": "w"}
    assert resolve_workspace(WorkspaceOptions(), inside_a_job).workspace_name == "w"


def test_a_missing_workspace_setting_names_what_to_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError) as error:
        resolve_workspace(WorkspaceOptions(subscription_id="s"), {})
    text = str(error.value)
    assert "--resource-group" in text and "--workspace" in text and "AZUREML_ARM_WORKSPACE_NAME" in text
    assert "--subscription" not in text


def test_the_default_factory_builds_an_mlclient_without_contacting_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("azure.identity")
    client = client_module.default_factory(WorkspaceOptions(subscription_id="00000000-0000-0000-0000-000000000000",
                                                            resource_group="rg", workspace_name="ws"))
    assert type(client).__name__ == "MLClient"


def test_a_stop_request_while_waiting_cancels_the_job_and_still_leaves_a_run_record(
        fake: FakeMLClient, plan: Any, tmp_path: Path) -> None:
    name = job_name_for_key("20261126-100000-abcdef")
    original_create = fake.jobs.create_or_update

    def create_then_run(job: Any, **kwargs: Any) -> Any:
        created = original_create(job, **kwargs)
        fake.jobs.finish(name, status="Running", running_polls=0)  # runs until cancelled
        return created

    fake.jobs.create_or_update = create_then_run  # type: ignore[method-assign]
    run_options = options(tmp_path, wait=True)
    run_options.stop.request("the DevOps job was cancelled")
    outcome = backend(tmp_path).run(plan, run_options, PlainProgress())
    assert fake.jobs.cancelled == [name]
    assert outcome.results.azureml is not None and outcome.results.azureml.status == "Canceled"
    assert {s.step for s in outcome.results.steps} == {s.id for s in plan.steps}
