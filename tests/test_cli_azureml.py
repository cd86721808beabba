"""The command line's Azure ML path, through the one client factory (a fake MLClient): `run --backend azureml
--no-wait` submits one job, says its name, exits 0 and builds no report; `compile` writes a loadable job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")

from click.testing import CliRunner  # noqa: E402

from orchestrator.cli import cli  # noqa: E402
from tests.fake_mlclient import FakeMLClient  # noqa: E402
from tests.azureml_support import make_repo  # noqa: E402


def test_run_azureml_without_wait_submits_one_job_and_exits_0(fake: FakeMLClient, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    out = tmp_path / "run"
    done = CliRunner().invoke(cli, ["run", str(repo), "--backend", "azureml", "--no-wait", "--out", str(out),
                                    "--subscription", "sub", "--resource-group", "rg", "--workspace", "ws"])
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    job_name = results["azureml"]["job_name"]
    assert results["status"] == "submitted" and job_name in done.output
    assert not (out / "report.html").exists()  # the pipeline's own report node will write it


def test_compile_writes_a_job_that_azure_ml_loads_and_validates(tmp_path: Path) -> None:
    from azure.ai.ml import load_job

    repo = make_repo(tmp_path / "repo")
    out = tmp_path / "pipeline.yml"
    done = CliRunner().invoke(cli, ["compile", str(repo), "--out", str(out)])
    assert done.exit_code == 0, done.output
    job = load_job(out)
    assert job._validate().passed
    assert job.settings.on_finalize and job.settings.on_finalize in job.jobs
