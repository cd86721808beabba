"""The notebook node's command, run for real on a tiny notebook in an Azure-ML-like environment: AZUREML_RUN_ID
set, MLFLOW_TRACKING_URI pointing at a local file store. Needs a kernel: the one kernel test of this suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from tests.builders import glue_source, make_notebook  # noqa: E402

STEP_SCRIPT = Path(__file__).resolve().parents[1] / "steps" / "azureml_step.py"


@pytest.mark.slow
def test_the_node_command_runs_the_notebook_and_logs_it_to_the_jobs_mlflow_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    code_root = tmp_path / "snapshot"
    make_notebook(code_root / "nbs" / "models" / "train.ipynb", "import helper", "answer = base * 2",
                  glue_source("answer", 42), parameters="base = 1")
    (code_root / "nbs" / "helper.py").write_text("VALUE = 1\n")  # importable through --pythonpath
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store for opt-in use
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    client = MlflowClient()
    experiment = client.create_experiment("examples")
    job_run = client.create_run(experiment, tags={"mlflow.parentRunId": "pipeline-run"}).info.run_id  # Azure ML's
    out = tmp_path / "outputs" / "result"
    completed = subprocess.run(
        [sys.executable, str(STEP_SCRIPT), "--code-root", str(code_root), "--plan-root", "nbs",
         "--step", "models_train", "--notebook", "models/train.ipynb", "--parameters", '{"base":21}',
         "--expect", '{"answer":">= 40"}', "--kernel", "python3", "--kernel-required", "false",
         "--timeout", "120", "--cell-timeout", "60", "--retries", "0", "--target", "cpu", "--environment", "cpu",
         "--pythonpath", '["."]', "--output-limit", "100000", "--run-key", "key-7", "--output-dir", str(out),
         "--secret-env", "NOTEBOOK_PAT"],
        env={**os.environ, "AZUREML_RUN_ID": job_run}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "passed" and result["metrics"]["answer"] == 42
    assert result["notebook"] == "models/train.ipynb" and (out / "train.ipynb").is_file()

    run = client.get_run(job_run)
    assert run.data.tags["orchestrator.status"] == "passed"
    assert run.data.tags["orchestrator.step"] == "models_train"
    assert run.data.tags["orchestrator.notebook"] == "models/train.ipynb"
    assert run.data.tags["orchestrator.run_key"] == "key-7"
    assert run.data.metrics["answer"] == 42.0 and run.data.metrics["nb_failed"] == 0.0
    assert run.data.metrics["nb_seconds"] > 0
    assert run.data.params["base"] == "21"
    assert run.info.status == "RUNNING"  # the job's status stays Azure ML's to set
    logged = {a.path for a in client.list_artifacts(job_run, "orchestrator")}
    logged |= {a.path for a in client.list_artifacts(job_run, "notebooks")}
    assert {"orchestrator/result.json", "notebooks/train.ipynb"} <= logged
