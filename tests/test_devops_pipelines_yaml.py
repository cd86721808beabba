"""azure-pipelines.yml parses and holds the three paths docs/devops.md describes; the server job's message
body, once DevOps expands its macros, is a kick_off the DevOps context reads the build id from."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.devops.context import DevOpsContext

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _mappings(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _mappings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _mappings(item)


def _stage(pipeline: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in _mappings(pipeline["stages"]) if m.get("stage") == name)


def _tasks(node: Any, task: str) -> list[dict[str, Any]]:
    return [m for m in _mappings(node) if m.get("task") == task]


def test_the_notebooks_parameter_names_every_path(pipeline: dict[str, Any]) -> None:
    parameter = pipeline["parameters"][0]
    assert parameter["name"] == "notebooks" and parameter["default"] == "none"
    assert set(parameter["values"]) == {"none", "server", "agent-azureml", "agent-local"}
    guards = [key for stage in pipeline["stages"] if isinstance(stage, dict) for key in stage if key.startswith("${{")]
    assert {re.search(r"'([\w-]+)'", g).group(1) for g in guards} == {  # type: ignore[union-attr]
        "server", "agent-azureml", "agent-local", "PullRequest"}


def test_a_pull_request_build_runs_what_the_change_can_affect_with_the_history_it_needs(
        pipeline: dict[str, Any]) -> None:
    [guard] = [key for stage in pipeline["stages"] if isinstance(stage, dict) for key in stage if "PullRequest" in key]
    assert "variables['Build.Reason']" in guard
    stage = _stage(pipeline, "notebooks_pr")
    [checkout] = [m for m in _mappings(stage) if "checkout" in m]
    assert checkout["fetchDepth"] == 0  # the merge base must be in the clone
    scripts = " ".join(str(m.get("script", "")) for m in _mappings(stage))
    assert "orchestrator run $(notebooksPath) --changed-since $(System.PullRequest.TargetBranch)" in scripts
    assert _tasks(stage, "PublishTestResults@2")[0]["condition"] == "succeededOrFailed()"


def test_ci_runs_make_test_and_publishes_its_results(pipeline: dict[str, Any]) -> None:
    ci = _stage(pipeline, "ci")
    scripts = [m["script"] for m in _mappings(ci) if "script" in m]
    assert "make test" in scripts
    assert _tasks(ci, "PublishTestResults@2")[0]["condition"] == "succeededOrFailed()"


def test_the_server_job_publishes_a_kick_off_and_waits(pipeline: dict[str, Any]) -> None:
    stage = _stage(pipeline, "notebooks_server")
    job = stage["jobs"][0]
    assert job["pool"] == "server"
    (task,) = _tasks(stage, "PublishToAzureServiceBus@1")
    inputs = task["inputs"]
    assert inputs["useDataContractSerializer"] is False and inputs["waitForCompletion"] is True
    # What DevOps sends once it expands the macros (docs/devops-protocol.md#message-body-encoding: server tasks expand $(...) in inputs).
    values = {"Build.Repository.Uri": "https://dev.azure.com/org/proj/_git/repo", "Build.SourceVersion": "abc123",
              "Build.SourceBranch": "refs/pull/7/merge", "Build.BuildId": "1234", "Build.BuildNumber": "20261126.3"}
    macros = set(re.findall(r"\$\(([\w.]+)\)", inputs["messageBody"]))
    assert macros == set(values)
    body = json.loads(re.sub(r"\$\(([\w.]+)\)", lambda m: values[m.group(1)], inputs["messageBody"]))
    assert body["job"] == "kick_off" and body["version"] == 1 and body["plan"] == "orchestrator.yml"
    props = {"PlanUrl": "https://dev.azure.com/org/", "ProjectId": "p", "HubName": "build", "PlanId": "pl",
             "JobId": "j", "TimelineId": "t", "TaskInstanceId": "ti", "AuthToken": "x"}
    context = DevOpsContext.from_properties(props, body)
    assert (context.build_id, context.commit, context.repository_url) == (
        "1234", "abc123", "https://dev.azure.com/org/proj/_git/repo")


@pytest.mark.parametrize("stage_name, command", [("notebooks_azureml", "--backend azureml --wait"),
                                                 ("notebooks_local", "orchestrator run")])
def test_agent_jobs_run_then_publish_junit_xml(pipeline: dict[str, Any], stage_name: str, command: str) -> None:
    stage = _stage(pipeline, stage_name)
    commands = " ".join(str(m.get("script", "")) + str(m.get("inlineScript", "")) for m in _mappings(stage))
    assert "orchestrator run" in commands and command in commands
    (publish,) = _tasks(stage, "PublishTestResults@2")
    assert publish["inputs"]["testResultsFormat"] == "JUnit"
    assert publish["inputs"]["testResultsFiles"].endswith("/junit.xml")
    assert publish["condition"] == "succeededOrFailed()"  # runs when notebooks failed, which is the point


def test_docs_explain_each_path_and_every_variable_read() -> None:
    docs = (ROOT / "docs" / "devops.md").read_text(encoding="utf-8")
    for needle in ("notebooks: server", "agent-azureml", "agent-local", "make test", "useDataContractSerializer",
                   "SYSTEM_ACCESSTOKEN", "SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECTID", "BUILD_BUILDID",
                   "AuthToken", "devops.json"):
        assert needle in docs, needle
    source = (ROOT / "orchestrator" / "devops" / "context.py").read_text(encoding="utf-8")
    for variable in set(re.findall(r'env\.get\("([A-Z_]+)"\)', source)):
        assert variable in docs, f"{variable} is read by context.py but not documented"
