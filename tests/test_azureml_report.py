"""The report node, offline: sibling discovery against a local MLflow file store with fake sibling runs, the
run record it writes, what it logs, and the DevOps hook's failure isolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow")

from orchestrator.azureml import collect, devops_hook, discover, finalize  # noqa: E402
from steps import mlflow_log  # noqa: E402

RUN_KEY = "20261126-020000"
EXPECTED = [collect.ExpectedStep.from_json(entry) for entry in [
    {"step": "prep", "notebook": "prep.ipynb", "target": "cpu", "environment": "cpu"},
    {"step": "train", "notebook": "models/train.ipynb", "target": "cpu", "environment": "cpu"},
    {"step": "after_train", "notebook": "after_train.ipynb", "after": ["train"], "target": "cpu", "environment": "cpu"},
    {"step": "broken", "notebook": "broken.ipynb", "target": "cpu", "environment": "cpu"},
    {"step": "gpu", "notebook": "gpu.ipynb", "target": "gpu", "environment": "gpu"},
    {"step": "reused", "notebook": "reused.ipynb", "target": "cpu", "environment": "cpu"},
    {"step": "named", "notebook": "named/nb.ipynb", "target": "cpu", "environment": "cpu"},
    {"step": "wip", "notebook": "wip.ipynb", "target": "cpu", "environment": "cpu", "skip": "work in progress"},
]]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store for opt-in use
    # The `gpu` node never started: without this each report would wait the default 30 s for it to appear.
    # Waiting itself is tested in test_emulator.py (discover.find_settled).
    monkeypatch.setenv(finalize.SETTLE_VARIABLE, "0")
    for name in ("MLFLOW_RUN_ID", "AZUREML_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def step_output(root: Path, step: str, notebook: str, status: str, **extra: Any) -> Path:
    folder = root / step
    folder.mkdir(parents=True)
    result = {"schema": 1, "step": step, "notebook": notebook, "status": status, "duration_s": 2.0, "attempts": 1,
              "started_at": "2026-11-26T02:00:01Z", "finished_at": "2026-11-26T02:00:03Z",
              "output_notebook": Path(notebook).name, **extra}
    (folder / "result.json").write_text(json.dumps(result))
    (folder / Path(notebook).name).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return folder


def node_run(client: Any, experiment: str, parent: str | None, outputs: Path | None, *, status: str,
             run_key: str = RUN_KEY, run_name: str | None = None, tags: dict[str, str] | None = None) -> str:
    """A notebook node's run, logged the way steps/mlflow_log.py logs it inside Azure ML."""
    all_tags = dict(tags or {})
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment, tags=all_tags, run_name=run_name)
    if outputs is not None:
        assert mlflow_log.log_step(outputs, run_key=run_key, run_id=run.info.run_id)
    client.set_terminated(run.info.run_id, status=status)
    return str(run.info.run_id)


@pytest.fixture
def pipeline(store: Any, tmp_path: Path) -> dict[str, Any]:
    """A finished pipeline in MLflow: its notebook nodes as sibling runs, one node reused from an earlier
    pipeline with the same run_key, and the report node's own run."""
    client = store
    experiment = client.create_experiment("examples")
    earlier = client.create_run(experiment, run_name="earlier pipeline").info.run_id
    parent = client.create_run(experiment, run_name="pipeline").info.run_id
    outputs = tmp_path / "outputs"
    node_run(client, experiment, parent, step_output(outputs, "prep", "prep.ipynb", "passed", metrics={"rows": 100}),
             status="FINISHED")
    node_run(client, experiment, parent,
             step_output(outputs, "train", "models/train.ipynb", "failed", metrics={"accuracy": 0.41},
                         error={"kind": "expectation", "ename": "ExpectationMissed", "evalue": "accuracy 0.41 < 0.9"}),
             status="FAILED")
    node_run(client, experiment, parent, None, status="FAILED", tags={"step": "broken"})  # died before logging
    node_run(client, experiment, parent, None, status="KILLED", run_name="named/nb.ipynb")  # cancelled, no tags
    node_run(client, experiment, earlier, step_output(outputs, "reused", "reused.ipynb", "passed"), status="FINISHED")
    node_run(client, experiment, earlier, step_output(tmp_path / "old", "gpu", "gpu.ipynb", "passed"),
             status="FINISHED", run_key="another-key")  # another run_key: not this pipeline's
    report = client.create_run(experiment, tags={"mlflow.parentRunId": parent}, run_name="report").info.run_id
    return {"client": client, "report": report, "parent": parent}


def test_the_report_node_accounts_for_every_expected_step(pipeline: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "report"
    results = finalize.run(run_key=RUN_KEY, expected_text=collect.encode_expected(EXPECTED), title="examples",
                           out=out, devops=None, own_run=pipeline["report"]).to_json()
    by_step = {s["step"]: s for s in results["steps"]}
    assert [s["step"] for s in results["steps"]] == [e.step for e in EXPECTED]
    assert by_step["prep"]["status"] == "passed" and by_step["prep"]["metrics"] == {"rows": 100}
    assert by_step["train"]["status"] == "failed"
    assert by_step["after_train"]["status"] == "skipped" and "models/train.ipynb" in by_step["after_train"]["reason"]
    assert by_step["broken"]["error"]["ename"] == "StepFailed"  # found by its node tag, no result
    assert by_step["gpu"]["error"]["ename"] == "NotStarted"  # no run: never started, not silently dropped
    assert by_step["reused"]["status"] == "passed"  # reused node, found through run_key
    assert by_step["named"]["error"]["ename"] == "Cancelled"  # found by its run name (the notebook path)
    assert by_step["wip"] == {**by_step["wip"], "status": "skipped", "reason": "work in progress"}
    assert results["status"] == "failed" and results["counts"]["passed"] == 2

    assert json.loads((out / "results.json").read_text())["steps"] == results["steps"]
    assert (out / "steps" / "prep" / "result.json").is_file() and (out / "steps" / "prep" / "prep.ipynb").is_file()
    junit = (out / "junit.xml").read_text()
    assert junit.count("<testcase") == len(EXPECTED)
    assert (out / "report.html").is_file()


def test_the_report_node_logs_statuses_and_metrics_to_its_own_run(pipeline: dict[str, Any], tmp_path: Path) -> None:
    finalize.run(run_key=RUN_KEY, expected_text=collect.encode_expected(EXPECTED), title="examples",
                 out=tmp_path / "report", devops=None, own_run=pipeline["report"])
    run = pipeline["client"].get_run(pipeline["report"])
    assert run.data.tags["orchestrator.status"] == "failed"
    assert run.data.tags["status.train"] == "failed" and run.data.tags["status.gpu"] == "error"
    assert run.data.metrics["notebooks_passed"] == 2.0
    assert run.data.metrics["prep.passed"] == 1.0 and run.data.metrics["train.accuracy"] == 0.41
    artifacts = {a.path for a in pipeline["client"].list_artifacts(pipeline["report"], "report")}
    assert {"report/results.json", "report/junit.xml", "report/report.html"} <= artifacts


def test_the_report_node_runs_from_its_command_line(pipeline: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZUREML_RUN_ID", pipeline["report"])  # as inside an Azure ML job
    expected = collect.encode_expected(EXPECTED)
    code = finalize.main(["--run-key", RUN_KEY, "--expected", expected, "--title", "examples", "--out",
                          str(tmp_path / "report")])
    assert code == 0 and (tmp_path / "report" / "results.json").is_file()


def test_a_failing_devops_callback_never_fails_the_report(pipeline: dict[str, Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun from studio calls back a server job that is already closed: DevOps refuses, the report stands."""
    import orchestrator.devops

    calls: list[tuple[Path, dict[str, Any]]] = []

    def stale_callback(run_dir: Path, config: dict[str, Any], get_secret: Any) -> None:
        calls.append((run_dir, config))
        raise RuntimeError("TaskCompleted refused: the job is already completed")

    monkeypatch.setattr(orchestrator.devops, devops_hook.HOOK_FUNCTION, stale_callback, raising=False)
    devops = {"token_secret": "devops-token", "properties": {"PlanId": "1"}}
    results = finalize.run(run_key=RUN_KEY, expected_text=collect.encode_expected(EXPECTED), title="examples",
                           out=tmp_path / "report", devops=devops, own_run=pipeline["report"]).to_json()
    assert calls and calls[0][0] == tmp_path / "report" and calls[0][1] == devops
    assert results["status"] == "failed" and (tmp_path / "report" / "junit.xml").is_file()


def test_the_devops_hook_reads_the_token_by_name_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.devops

    seen: dict[str, Any] = {}

    def hook(run_dir: Path, config: dict[str, Any], get_secret: Any) -> None:
        seen["config"] = config
        try:
            get_secret(config["token_secret"])
        except LookupError as exc:
            seen["error"] = str(exc)

    monkeypatch.setattr(orchestrator.devops, devops_hook.HOOK_FUNCTION, hook, raising=False)
    assert devops_hook.publish(tmp_path, None) == "DevOps publishing not configured"
    assert devops_hook.publish(tmp_path, {"token_secret": "devops-token"}) == "published to DevOps"
    assert seen["config"] == {"token_secret": "devops-token"} and "key_vault_url" in seen["error"]


def test_mlflow_log_and_discovery_agree_on_names() -> None:
    assert mlflow_log.STEP_TAG == discover.STEP_TAG
    assert mlflow_log.RUN_KEY_TAG == discover.RUN_KEY_TAG
    assert f"{mlflow_log.RESULT_ARTIFACT_DIR}/result.json" == discover.RESULT_ARTIFACT
    assert mlflow_log.NOTEBOOK_ARTIFACT_DIR == discover.NOTEBOOK_ARTIFACT_DIR


def test_a_large_expected_list_travels_compressed() -> None:
    entries = [collect.ExpectedStep(step=f"area_{i // 50}_notebook_{i:04d}", notebook=f"area_{i // 50}/notebook_{i:04d}.ipynb",
                                    target="cpu", environment="cpu") for i in range(1500)]
    text = collect.encode_expected(entries)
    assert text.startswith(collect.COMPRESSED_PREFIX) and len(text) < collect.EXPECTED_INLINE_LIMIT
    assert collect.decode_expected(text) == entries


@pytest.mark.slow
def test_the_report_node_runs_from_its_staged_snapshot_alone(pipeline: dict[str, Any], tmp_path: Path) -> None:
    """What ships in the report node's snapshot is enough to run it (the command Azure ML runs)."""
    import os
    import subprocess
    import sys

    from orchestrator.azureml.snapshot import report_snapshot

    snapshot = report_snapshot(tmp_path / "cache").path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["AZUREML_RUN_ID"] = pipeline["report"]
    probe = "import orchestrator, sys; print(orchestrator.__file__)"
    completed = subprocess.run(
        [sys.executable, str(snapshot / "steps" / "report_step.py"), "--run-key", RUN_KEY,
         "--expected", collect.encode_expected(EXPECTED), "--title", "examples", "--out", str(tmp_path / "out")],
        cwd=snapshot, env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["counts"]["passed"] == 2
    where = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(snapshot)!r}); {probe}"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert where.stdout.startswith(str(snapshot))  # the snapshot's copy, not the installed package
