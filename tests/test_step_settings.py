"""Each step setting is declared once (steps/settings.py) and reaches every place that needs it: the step
runner's options, StepRequest's defaults, the Azure ML node command and the notebook component's inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from steps import _cli, azureml_step
from steps.run_notebook import StepRequest
from steps.settings import COMPONENT_SETTINGS, STEP_SETTINGS, StepSetting


@pytest.mark.parametrize("setting", STEP_SETTINGS, ids=lambda s: s.field)
def test_the_runner_option_fills_the_request_field_and_defaults_agree(setting: StepSetting, tmp_path: Path) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(StepRequest)}
    assert defaults[setting.field] == setting.default
    fields = _cli.parse_arguments([str(tmp_path / "nb.ipynb"), "--output-dir", str(tmp_path), setting.option, "7"])
    assert fields[setting.field] == 7 and isinstance(fields[setting.field], setting.type)


@pytest.mark.parametrize("setting", STEP_SETTINGS, ids=lambda s: s.field)
def test_a_value_out_of_range_is_refused(setting: StepSetting, tmp_path: Path) -> None:
    with pytest.raises(_cli.BadArguments):
        _cli.parse_arguments([str(tmp_path / "nb.ipynb"), "--output-dir", str(tmp_path), setting.option, "-1"])


def test_the_node_command_passes_only_the_settings_it_was_given(tmp_path: Path) -> None:
    base = ["--plan-root", ".", "--step", "s", "--notebook", "nb.ipynb", "--kernel", "python3", "--target", "cpu",
            "--environment", "cpu", "--output-dir", str(tmp_path)]
    assert not set(azureml_step.runner_command(azureml_step.parse(base), tmp_path)) & {
        s.option for s in COMPONENT_SETTINGS}
    given = base + [arg for s in COMPONENT_SETTINGS for arg in (s.option, "3")]
    command = azureml_step.runner_command(azureml_step.parse(given), tmp_path)
    for setting in COMPONENT_SETTINGS:
        assert command[command.index(setting.option) + 1] == repr(setting.type(3))


def test_the_notebook_component_has_one_input_per_setting() -> None:
    pytest.importorskip("azure.ai.ml")
    from orchestrator.azureml.components import notebook_command, notebook_component

    component = notebook_component(code=Path("."), environment=None, plan_root=".", secret_env=(), after_slots=0,
                                   label="cpu")
    command = notebook_command(plan_root=".", secret_env=(), after_slots=0)
    for setting in COMPONENT_SETTINGS:
        name = str(setting.component_input)
        assert component.inputs[name].type == setting.input_type
        assert bool(component.inputs[name].optional) == (setting.default is None)
        assert f"{setting.option} ${{{{inputs.{name}}}}}" in command
