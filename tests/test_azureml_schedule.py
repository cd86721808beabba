"""Schedules (validated offline) and the `compile` / `schedule` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

pytest.importorskip("azure.ai.ml")

import orchestrator.plan  # noqa: E402
from orchestrator.azureml.commands import compile_command, schedule_command  # noqa: E402
from orchestrator.azureml.compile import REPORT_NODE, CompileOptions, compile_plan  # noqa: E402
from orchestrator.azureml.schedule import TRIGGER_TIME, build_schedule, check_cron, validate_schedule  # noqa: E402
from orchestrator.errors import InvalidInputError  # noqa: E402
from tests.fake_mlclient import FakeMLClient  # noqa: E402
from tests.azureml_support import examples_plan, make_repo  # noqa: E402


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The examples-like plan, also what `load_plan` returns for the commands under test."""
    built = examples_plan(make_repo(tmp_path / "repo"))
    monkeypatch.setattr(orchestrator.plan, "load_plan", lambda *args, **kwargs: built)
    return built


def test_a_schedule_runs_the_pipeline_with_the_trigger_time_as_run_key(plan: Any, tmp_path: Path) -> None:
    job = compile_plan(plan, CompileOptions(run_key=TRIGGER_TIME, cache_dir=tmp_path / "cache"))
    schedule = build_schedule(job, cron="0 2 * * *", name="examples-nightly", time_zone="W. Europe Standard Time")
    validate_schedule(schedule)
    assert schedule.create_job.inputs["run_key"]._data == "${{creation_context.trigger_time}}"
    body = json.dumps(schedule._to_rest_object().as_dict(),
                      default=lambda v: v._to_dict() if hasattr(v, "_to_dict") else repr(v))
    assert "${{creation_context.trigger_time}}" in body
    assert '"on_finalize": "orchestrator_report"' in body
    assert '"expression": "0 2 * * *"' in body and "W. Europe Standard Time" in body


@pytest.mark.parametrize("cron", ["0 2 * *", "every night", "0 2 * * * *"])
def test_a_bad_cron_expression_is_an_input_error(cron: str) -> None:
    with pytest.raises(InvalidInputError, match="five fields"):
        check_cron(cron)


def test_an_unknown_time_zone_is_an_input_error(plan: Any, tmp_path: Path) -> None:
    job = compile_plan(plan, CompileOptions(run_key=TRIGGER_TIME, cache_dir=tmp_path / "cache"))
    with pytest.raises(InvalidInputError, match="time zone"):
        build_schedule(job, cron="0 2 * * *", name="x", time_zone="Mars/Olympus")


def invoke(command: click.Command, args: list[str]) -> Any:
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_schedule_command_creates_the_schedule_through_the_client(plan: Any, fake: FakeMLClient,
                                                                  tmp_path: Path) -> None:
    result = invoke(schedule_command, [str(plan.root), "--cron", "30 1 * * 1-5", "--snapshots", str(tmp_path / "c"),
                                       "--workspace", "ws", "--resource-group", "rg", "--subscription", "sub"])
    assert "examples-schedule" in result.output
    created = fake.schedules.created["examples-schedule"]
    assert created.trigger.expression == "30 1 * * 1-5"
    assert created.create_job.settings.on_finalize == REPORT_NODE
    assert fake.workspaces_seen[0].workspace_name == "ws"


def test_schedule_command_with_out_writes_yaml_that_loads_back(plan: Any, tmp_path: Path) -> None:
    from azure.ai.ml.entities._load_functions import load_schedule  # not re-exported by azure.ai.ml

    out = tmp_path / "schedule.yml"
    invoke(schedule_command, [str(plan.root), "--cron", "0 2 * * *", "--name", "nightly", "--out", str(out),
                              "--snapshots", str(tmp_path / "c")])
    loaded: Any = load_schedule(out)
    assert loaded.name == "nightly" and loaded.trigger.expression == "0 2 * * *"
    assert loaded.create_job.settings.on_finalize == REPORT_NODE
    assert loaded.create_job.inputs["run_key"]._data == TRIGGER_TIME
    assert loaded._validate().passed


def test_compile_command_writes_a_pipeline_that_validates(plan: Any, tmp_path: Path) -> None:
    from azure.ai.ml import load_job

    out = tmp_path / "build" / "pipeline.yml"
    result = invoke(compile_command, [str(plan.root), "--out", str(out), "--snapshots", str(tmp_path / "c")])
    assert "5 notebook nodes + report, 2 environment(s)" in result.output
    loaded: Any = load_job(out)
    assert loaded._validate().passed and loaded.settings.on_finalize == REPORT_NODE
