"""Fixes from an audit of the Azure ML backend against azure-ai-ml's source and the docs (issue 8, item 5),
each with the test that failed before it. Display names and tags on export: tests/test_emulator.py."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from orchestrator.azureml.compile import REPORT_NODE, REPORT_TIMEOUT_S, CompileOptions, compile_plan  # noqa: E402
from orchestrator.azureml.emulator import packages  # noqa: E402
from orchestrator.errors import InvalidInputError  # noqa: E402
from tests.builders import make_notebook  # noqa: E402


def _project(root: Path, conda: str, plan_extra: str = "") -> Any:
    from orchestrator.plan import load_plan

    root.mkdir(parents=True)
    (root / "env.yml").write_text(conda)
    (root / "orchestrator.yml").write_text(
        "version: 1\nenvironments:\n  project: {conda: env.yml}\ndefaults: {environment: project}\n"
        f"notebooks:\n  - glob: '*.ipynb'\n{plan_extra}")
    make_notebook(root / "a.ipynb", "x = 1")
    return load_plan(root)


def test_a_plain_project_environment_gets_the_runner_packages_and_the_report_the_stock_one(tmp_path: Path,
                                                                                         caplog: pytest.LogCaptureFixture) -> None:
    plan = _project(tmp_path / "repo", "name: project\ndependencies:\n  - python=3.11\n  - numpy\n  - pip:\n"
                                       "      - requests\n")
    with caplog.at_level(logging.WARNING, logger="orchestrator.azureml"):
        job = compile_plan(plan, CompileOptions(cache_dir=tmp_path / "cache"))
    node, report = job.jobs["a"], job.jobs[REPORT_NODE]
    conda = node.component.environment.conda_file
    # the emulator's check: what the node's step imports is declared by its environment
    assert packages.missing_packages(node.component.command, Path(node.component.code), conda) == {}
    assert "numpy" in conda["dependencies"] and "requests" in json.dumps(conda)  # the user's stay
    assert "env.yml" in caplog.text and "papermill" in caplog.text  # and the user is told what was added
    from orchestrator.azureml.environments import CPU_IMAGE, STOCK_DIR

    import yaml

    assert report.component.environment.image == CPU_IMAGE
    assert report.component.environment.conda_file == yaml.safe_load((STOCK_DIR / "cpu.yml").read_text())
    assert packages.missing_packages(report.component.command, Path(report.component.code),
                                     report.component.environment.conda_file) == {}
    assert report.limits.timeout == REPORT_TIMEOUT_S


def test_a_complete_environment_is_left_as_written(tmp_path: Path) -> None:
    from orchestrator.azureml.environments import with_runner_packages

    conda = {"dependencies": ["papermill", "nbclient", "nbformat", "jupyter_client", "ipykernel", "pyzmq",
                              {"pip": ["mlflow==2.17.2", "azureml-mlflow"]}]}
    assert with_runner_packages(conda, "env.yml") is conda  # mlflow counts for mlflow-skinny


def test_report_identity_picks_the_credential_azure_ml_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    from orchestrator.azureml.devops_hook import report_credential

    made: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, **kwargs: Any) -> str:
            made.append((self.name, kwargs))
            return self.name

    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", Recorder("managed"))
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Recorder("default"))
    assert report_credential("managed", {"DEFAULT_IDENTITY_CLIENT_ID": "1234"}) == "managed"
    assert report_credential("managed", {}) == "managed"
    assert report_credential(None, {}) == "default"
    assert made == [("managed", {"client_id": "1234"}), ("managed", {}), ("default", {})]
    from azure.ai.ml.identity import AzureMLOnBehalfOfCredential

    assert isinstance(report_credential("user", {}), AzureMLOnBehalfOfCredential)


def test_report_identity_user_needs_a_compute_cluster_and_reaches_the_report_node(tmp_path: Path) -> None:
    plan = _project(tmp_path / "repo", "dependencies: [python=3.11]\n")
    devops = {"key_vault_url": "https://v.vault.azure.net/", "token_secret": "t", "collection_url": "https://x",
              "project": "p", "build_id": "1"}
    with pytest.raises(InvalidInputError, match="compute clusters only"):
        compile_plan(plan, CompileOptions(cache_dir=tmp_path / "cache", report_identity="user", devops=devops))
    job = compile_plan(plan, CompileOptions(cache_dir=tmp_path / "cache", report_identity="managed", devops=devops))
    assert '"identity":"managed"' in str(job.jobs[REPORT_NODE].inputs["devops"]._data)


class RefusingClient:
    """An MlflowClient whose log_batch is refused (a bad metric value, a limit), recording the rest."""

    calls: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_batch(self, run_id: str, **kwargs: Any) -> None:
        RefusingClient.calls.append("log_batch")
        raise RuntimeError("INVALID_PARAMETER_VALUE")

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        RefusingClient.calls.append(f"tag {key}={value}")

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        RefusingClient.calls.append(f"artifact {artifact_path}/{Path(path).name}")


def test_a_refused_metric_batch_loses_neither_the_status_nor_the_notebook(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.tracking

    from steps import mlflow_log

    (tmp_path / "result.json").write_text(json.dumps({"status": "passed", "step": "a", "notebook": "a.ipynb",
                                                      "metrics": {"acc": 0.9}, "parameters": {"k": 1}}))
    (tmp_path / "a.ipynb").write_text("{}")
    RefusingClient.calls = []
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", RefusingClient)
    assert mlflow_log.log_step(tmp_path, run_key="k", run_id="r") is False
    calls = RefusingClient.calls
    assert "tag orchestrator.status=passed" in calls and "tag orchestrator.step=a" in calls
    assert "artifact orchestrator/result.json" in calls and "artifact notebooks/a.ipynb" in calls
    # the outcome first: every tag and artifact before any batch
    assert max(i for i, c in enumerate(calls) if not c.startswith("log_batch")) < calls.index("log_batch")


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_the_snapshot_of_a_git_repository_is_what_git_tracks_less_amlignore(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator.azureml.snapshot import notebook_snapshot

    root = tmp_path / "repo"
    make_notebook(root / "nb" / "a.ipynb", "x = 1")
    (root / ".gitignore").write_text("*.sh\n*.bin\n")
    (root / "run.sh").write_text("echo hi\n")  # tracked although *.sh matches: git never ignores it
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("# guide\n")
    (root / ".amlignore").write_text("docs/\n")
    (root / "weights.pt").write_bytes(b"\0" * (11 * 1024 * 1024))  # tracked and large: named in a warning
    _git(root, "init", "-q")
    _git(root, "add", "-f", ".")
    _git(root, "commit", "-q", "-m", "x")
    (root / "stray-model.pt").write_bytes(b"\0" * 1024)  # untracked, no ignore file names it
    with caplog.at_level(logging.WARNING, logger="orchestrator.azureml"):
        snapshot = notebook_snapshot(root, tmp_path / "cache")
    shipped = {p.relative_to(snapshot.path).as_posix() for p in snapshot.path.rglob("*") if p.is_file()}
    assert {"nb/a.ipynb", "run.sh", ".gitignore", "weights.pt"} <= shipped
    assert "stray-model.pt" not in shipped and "docs/guide.md" not in shipped
    assert "weights.pt (11.5 MB)" in caplog.text


def test_rerun_builds_a_fresh_job_naming_its_source(tmp_path: Path) -> None:
    from azure.ai.ml import load_job

    from orchestrator.azureml.rerun import prepare_clone
    from tests.emulator_support import compiled

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "orchestrator.yml").write_text("version: 1\nnotebooks:\n  - glob: '*.ipynb'\n")
    make_notebook(repo / "a.ipynb", "x = 1")
    compiled(repo, tmp_path / "build" / "pipeline.yml", run_key="first-key")
    fetched = load_job(tmp_path / "build" / "pipeline.yml")  # as jobs.get returns it, with the service's extras
    fetched.name = "orchestrator_first"
    fetched._id = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/jobs/x"
    fetched.properties = {"azureml.runsource": "azureml.PipelineRun", "azureml.git.dirty": "False"}
    clone, key = prepare_clone(fetched, failed=True, job_name="orchestrator_first")
    assert key == "first-key" and clone is not fetched
    assert clone.properties == {} and clone.tags["rerun_of"] == "orchestrator_first"
    assert clone.settings.on_finalize == REPORT_NODE and clone.settings.force_rerun is False
    assert set(clone.jobs) == set(fetched.jobs) and clone.experiment_name == fetched.experiment_name
    rest = clone._to_rest_object()
    assert rest.properties.source_job_id == fetched.id
    assert clone._validate().passed
