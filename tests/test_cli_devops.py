"""The DevOps wiring of the command line: `run --devops` reports live and closes the server job, `report
--devops` publishes a finished run. Real kernels, the real command, the strict DevOps server over HTTP."""

from __future__ import annotations

import pytest

import json
from pathlib import Path

from tests.builders import make_notebook
from tests.cli_helpers import orchestrator_env, read_results, run_cli
from tests.conftest_devops import BODY
from tests.devops_server import DevOpsServer
from tests.report_builders import step_result, write_run

# Real kernels or whole pipelines for every test: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    make_notebook(repo / "ok.ipynb", "print('fine')")
    make_notebook(repo / "bad.ipynb", "raise ValueError('broken on purpose')")
    return repo


def _message_file(tmp_path: Path, server: DevOpsServer) -> Path:
    path = tmp_path / "message.json"
    path.write_text(json.dumps({"message_id": "m-1", "body": BODY,
                                "application_properties": server.message_properties()}), encoding="utf-8")
    return path


def test_run_with_devops_callback_publishes_results_and_closes_the_server_job_once(
        tmp_path: Path, devops_server: DevOpsServer) -> None:
    out = tmp_path / "run"
    done = run_cli("run", _repo(tmp_path), "--out", out, "--devops", "--callback", _message_file(tmp_path, devops_server))
    assert done.returncode == 1, done.stderr  # the notebooks' own outcome: one failed
    assert "Traceback" not in done.stderr
    completed = devops_server.task_completed_events()
    assert len(completed) == 1 and completed[0]["result"] == "failed"
    [run] = devops_server.runs.values()
    assert run["state"] == "Completed"
    outcomes = sorted(result["outcome"] for result in run["results"])
    assert outcomes == ["Failed", "Passed"]
    assert devops_server.calls("feed"), "no live feed lines were posted while the run went on"
    assert read_results(out)["status"] == "failed"


def test_report_devops_in_an_agent_job_publishes_a_test_run_and_sends_no_callback(
        tmp_path: Path, devops_server: DevOpsServer) -> None:
    out = tmp_path / "run"
    assert run_cli("run", _repo(tmp_path), "--out", out).returncode == 1
    env = orchestrator_env(SYSTEM_ACCESSTOKEN=devops_server.token, SYSTEM_COLLECTIONURI=devops_server.url,
                           SYSTEM_TEAMPROJECTID=devops_server.project_id, BUILD_BUILDID="77")
    done = run_cli("report", out, "--devops", env=env)
    assert done.returncode == 0, done.stderr
    assert "devops: test run" in done.stdout
    [run] = devops_server.runs.values()
    assert run["state"] == "Completed" and len(run["results"]) == 2
    assert devops_server.task_completed_events() == []


def test_report_devops_without_agent_variables_is_a_clear_input_error(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", [step_result("ok.ipynb", "passed")])  # a finished run folder; no kernel needed
    env = orchestrator_env()
    for name in ("SYSTEM_ACCESSTOKEN", "SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECTID"):
        env.pop(name, None)
    done = run_cli("report", out, "--devops", env=env)
    assert done.returncode == 2 and "SYSTEM_COLLECTIONURI" in done.stderr and "Traceback" not in done.stderr
