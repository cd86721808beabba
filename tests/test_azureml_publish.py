"""`orchestrator publish` (issue 9): the compiled pipeline as a batch endpoint with a pipeline-component deployment.
Offline: the YAML azure-ai-ml's loaders read back, and bad input refused. In the emulated workspace with the report
node never running: an endpoint invocation and a studio clone of it are each reported by the Event Grid backstop,
with one DevOps test run and one TaskCompleted whatever the events' order and repetitions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

import orchestrator.plan  # noqa: E402
from orchestrator.azureml.compile import REPORT_NODE  # noqa: E402
from orchestrator.cli.main import main  # noqa: E402
from tests.azureml_support import examples_plan, make_repo  # noqa: E402
from tests.devops_server import DevOpsServer  # noqa: E402
from tests.test_azureml_backstop import delivered, event  # noqa: E402

SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The examples-like plan (7 notebooks, 2 skipped), also what `load_plan` returns for the command."""
    built = examples_plan(make_repo(tmp_path / "repo"), secret_env=("MY_TOKEN",))
    monkeypatch.setattr(orchestrator.plan, "load_plan", lambda *args, **kwargs: built)
    return built


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.out + out.err


def test_publish_out_writes_an_endpoint_and_deployment_that_azure_ai_ml_loads(
        plan: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from azure.ai.ml import load_batch_deployment, load_batch_endpoint
    from azure.ai.ml.entities import PipelineComponent, PipelineComponentBatchDeployment

    from azure.ai.ml._utils import _experimental

    monkeypatch.setenv("MY_TOKEN", SECRET)
    monkeypatch.setattr(_experimental, "_warning_cache", set())  # as in a fresh process: each warning not yet shown
    out = tmp_path / "published"
    code, text = cli(["publish", str(plan.root), "--endpoint", "nb-examples", "--deployment", "nightly",
                      "--out", str(out), "--snapshots", str(tmp_path / "snapshots")], capsys)
    assert code == 0, text
    # The SDK's warnings about its own schemas say nothing about the user's files: not shown.
    assert not [r for r in caplog.records if "experimental class" in r.getMessage()]
    assert "batch endpoint nb-examples, deployment nightly" in text and "5 notebook nodes" in text
    endpoint: Any = load_batch_endpoint(out / "endpoint.yml")
    deployment: Any = load_batch_deployment(out / "deployment.yml")
    assert endpoint.name == "nb-examples" and endpoint.auth_mode == "aad_token"
    assert isinstance(deployment, PipelineComponentBatchDeployment)
    assert (deployment.name, deployment.endpoint_name) == ("nightly", "nb-examples")
    component = deployment.component
    assert isinstance(component, PipelineComponent) and component._validate().passed
    assert REPORT_NODE not in component.jobs and len(component.jobs) == 5  # no on_finalize in a component
    assert component.inputs["run_key"].optional is not True  # each invocation names its run
    expected = json.loads(component.inputs["expected"].default)
    assert [e["step"] for e in expected][-2:] == ["scratch_wip", "scratch_after_wip"]  # skipped ones reported too
    assert component.inputs["devops"].optional is True
    assert component.inputs["parameters"].default == "{}"  # notebook parameters per invocation, bound to every node
    bound = {getattr(node.inputs["invocation_parameters"]._data, "path", None) for node in component.jobs.values()}
    assert bound == {"${{parent.inputs.parameters}}"}
    for tag in ("orchestrator", "plan", "repository"):  # what the backstop recognises the invoked job by
        assert component.tags[tag] and deployment.tags[tag] == component.tags[tag]
    assert component.tags["endpoint"] == "nb-examples"
    node = component.jobs["models_02_train"]
    assert (node.display_name, node.tags["step"]) == ("models/02_train.ipynb", "models_02_train")
    written = "".join((out / name).read_text() for name in ("endpoint.yml", "deployment.yml", "component.yml"))
    assert SECRET not in written and "MY_TOKEN" in written  # the name crosses, never the value


def test_parameters_given_at_invocation_go_over_the_compiled_ones_in_a_node_and_a_pack() -> None:
    from steps import azureml_pack, azureml_step

    args = azureml_step.parse(["--plan-root", ".", "--step", "a", "--notebook", "a.ipynb", "--kernel", "python3",
                               "--target", "cpu", "--environment", "cpu", "--output-dir", "out",
                               "--parameters", '{"day": "mon", "k": 1}', "--invocation-parameters", '{"day": "tue"}'])
    command = azureml_step.runner_command(args, Path("/code"))
    assert json.loads(command[command.index("--parameters") + 1]) == {"day": "tue", "k": 1}
    entry = {"step": "a", "notebook": "a.ipynb", "parameters": {"day": "mon"}, "expect": {}, "kernel": "python3",
             "kernel_required": False, "timeout": None, "cell_timeout": None, "retries": 0, "target": "cpu",
             "environment": "cpu", "pythonpath": [], "output_limit": 1000, "after_inputs": [], "after_inside": []}
    pack = azureml_pack.parse(["--plan-root", ".", "--pack", json.dumps([entry]), "--output-dir", "out",
                               "--invocation-parameters", '{"day": "tue"}'])
    assert azureml_step.merged_parameters(azureml_pack.notebook_args(pack, 0)) == {"day": "tue"}
    with pytest.raises(SystemExit):  # not an object: the node fails with argparse's message in its log
        azureml_step.parse(["--plan-root", ".", "--step", "a", "--notebook", "a.ipynb", "--kernel", "k", "--target",
                            "t", "--environment", "e", "--output-dir", "o", "--invocation-parameters", "[1]"])


@pytest.mark.parametrize(("args", "says"), [
    (["--deployment", "nightly"], "--deployment names a deployment of a batch endpoint"),
    (["--endpoint", "9lives"], "must start with an upper- or lowercase letter"),
    (["--endpoint", "ab"], "at least 3 and at most 32"),
    (["--endpoint", "ends-with-"], "must start with an upper- or lowercase letter"),
    (["--endpoint", "nb-examples", "--deployment", "under_score"], "--deployment: under_score"),
])
def test_bad_publish_arguments_are_exit_2_without_a_traceback(args: list[str], says: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, text = cli(["publish", str(tmp_path), *args, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and says in text and "Traceback" not in text, text
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_cannot_be_written_is_exit_2(plan: Any, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    code, text = cli(["publish", str(plan.root), "--endpoint", "nb-examples", "--out", str(tmp_path / "taken"),
                      "--snapshots", str(tmp_path / "snapshots")], capsys)
    assert code == 2 and "--out" in text and "Traceback" not in text, text


def test_publishing_an_unknown_plan_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = cli(["publish", str(tmp_path / "nowhere"), "--endpoint", "nb-examples", "--out", str(tmp_path / "o")],
                     capsys)
    assert code == 2 and "nowhere" in text and "Traceback" not in text, text


@pytest.mark.slow
def test_an_invoked_endpoint_and_a_studio_clone_of_its_job_are_reported_by_the_backstop(
        tmp_path: Path, devops_server: DevOpsServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Published, invoked with DevOps routing (a DevOps job waiting on the run), the report node never running: the
    events (terminal twice, an older Running last) give one report, one test run, one TaskCompleted; a studio clone
    of the finished job is reported in its own run, and publishes nothing more to the closed DevOps job."""
    from azure.ai.ml import Input
    from mlflow.tracking import MlflowClient

    from orchestrator.azureml.client import set_client_factory
    from orchestrator.azureml.emulator import Assumptions, EmulatedWorkspace
    from orchestrator.trigger.handlers import handle
    from tests.emulator_support import SETTLE_S
    from tests.trigger_support import VAULT, FakeSecrets, make_services, notebook_repo

    repo, _ = notebook_repo(tmp_path / "repo", {"nb/a.ipynb": "assert who == 'endpoint'", "nb/b.ipynb": "y = 2"},
                            "version: 1\nexperiment: endpoint\ndefaults: {retries: 0}\nnotebooks:\n  - glob: 'nb/*.ipynb'\n")
    # defaults-hidden: the invoked job lists only run_key and devops; the backstop reads the rest from the component.
    workspace = EmulatedWorkspace(tmp_path / "workspace",
                                  assumptions=Assumptions(finalize_never=True, defaults_hidden=True),
                                  node_environment={"ORCHESTRATOR_DISCOVERY_SETTLE_S": SETTLE_S})
    previous = set_client_factory(workspace.factory)
    try:
        code, text = cli(["publish", str(repo.work), "--endpoint", "nb-endpoint", "--snapshots", str(tmp_path / "snap"),
                          "--subscription", "s", "--resource-group", "r", "--workspace", "w"], capsys)
        assert code == 0 and "published batch endpoint nb-endpoint, deployment notebooks" in text, text
        assert workspace.batch_endpoints.get("nb-endpoint").defaults == {"deployment_name": "notebooks"}

        secrets = FakeSecrets()
        secrets.put("endpoint-job-token", devops_server.token, expires_on=datetime.now(timezone.utc) + timedelta(hours=1))
        routing = {k: v for k, v in devops_server.message_properties().items() if k != "AuthToken"}
        devops = {"key_vault_url": VAULT, "token_secret": "endpoint-job-token", "properties": routing}
        with pytest.raises(Exception, match="run_key"):  # a required input: refused, no job
            workspace.batch_endpoints.invoke("nb-endpoint", inputs={})
        invoked = workspace.batch_endpoints.invoke(
            "nb-endpoint", inputs={"run_key": Input(type="string", default="2026-12-03"),
                                   "parameters": Input(type="string", default='{"who": "endpoint"}'),  # a asserts it
                                   "devops": Input(type="string", default=json.dumps(devops))})
        name = str(invoked.name)
        assert workspace.wait(name, timeout=300) == "Completed"
        job = workspace.jobs.get(name)
        assert REPORT_NODE not in job.jobs and job.tags["endpoint"] == "nb-endpoint" and "expected" not in job.inputs

        services = make_services(tmp_path, secrets=secrets)
        tags = dict(job.tags)
        finished, running = event(name, "Completed", tags, event_id="e-2"), event(name, "Running", tags, event_id="e-1")
        first = handle(delivered(finished), services)
        assert first.action == "complete" and "by the backstop: test run" in first.detail, first
        again = handle(delivered(finished, message_id="eg-2"), services)
        late = handle(delivered(running, message_id="eg-0"), services)
        assert again.action == "complete" and "not finished" in late.detail, (again, late)
        assert len(devops_server.runs) == 1, devops_server.runs
        [completed] = devops_server.task_completed_events()
        assert str(completed["result"]).lower() == "succeeded"

        clone = workspace.studio_clone(name)  # the same run_key: both notebooks are reused, nothing runs
        assert workspace.wait(clone, timeout=300) == "Completed"
        assert all(child.reused_from for child in workspace.state(clone).children.values())
        cloned = handle(delivered(event(clone, "Completed", dict(workspace.jobs.get(clone).tags), event_id="e-3")),
                        services)
        assert cloned.action == "complete" and "already closed" in cloned.detail, cloned
        assert len(devops_server.runs) == 1 and len(devops_server.task_completed_events()) == 1

        # Where the service lists the component's defaults on the job: read from the job itself. Same run_key:
        # every notebook is reused.
        workspace.assumptions = Assumptions(finalize_never=True)
        shown = str(workspace.batch_endpoints.invoke(
            "nb-endpoint", inputs={"run_key": "2026-12-03", "parameters": '{"who": "endpoint"}'}).name)
        assert workspace.wait(shown, timeout=300) == "Completed" and "expected" in workspace.jobs.get(shown).inputs
        plain = handle(delivered(event(shown, "Completed", dict(workspace.jobs.get(shown).tags), event_id="e-4")),
                       services)
        assert plain.action == "complete" and "no DevOps routing" in plain.detail, plain

        tracking = MlflowClient(tracking_uri=workspace.tracking.uri)
        for job_name in (name, clone, shown):
            local = Path(tracking.download_artifacts(str(workspace.state(job_name).run_id), "report",
                                                     str(tmp_path / "dl" / job_name)))
            stored = json.loads((local / "results.json").read_text())
            assert {s["step"]: s["status"] for s in stored["steps"]} == {"nb_a": "passed", "nb_b": "passed"}, job_name
            assert stored["reported_by"] == "Event Grid backstop" and (local / "report.html").is_file()
    finally:
        set_client_factory(previous)
        workspace.close()


def test_publishing_again_deploys_a_new_component_version_so_the_job_tags_survive(
        plan: Any, emulated_client: Any, tmp_path: Path) -> None:
    """azure-ai-ml sends the job tags only for a component it registers (publish.py); the emulated workspace does
    the same, so a deployment naming an existing version would run untagged jobs the backstop dismisses."""
    from orchestrator.azureml import publish
    from orchestrator.azureml.compile import CompileOptions, compile_plan

    job = compile_plan(plan, CompileOptions(cache_dir=tmp_path / "snapshots"))
    deployments = emulated_client.batch_endpoints.deployments
    for _ in range(2):
        publish.create(emulated_client, publish.build(job, endpoint="nb-examples"))
        kept = deployments[("nb-examples", "notebooks")]
        assert kept.job_tags["orchestrator"] and kept.job_tags["component"] == ":".join(kept.component)
    versions = sorted(p.name for p in (emulated_client.root / "components" / "orchestrator_nb_examples").iterdir())
    assert len(versions) == 2
    same = publish.build(job, endpoint="nb-examples", version=versions[-1])  # an existing version: used by id
    publish.create(emulated_client, same)
    assert deployments[("nb-examples", "notebooks")].job_tags == {}
