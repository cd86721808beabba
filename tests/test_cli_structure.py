"""The command line's structure: a light start, no import circle, every listed command loads."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from orchestrator.cli.main import COMMANDS, cli


def _modules_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_importing_the_cli_loads_no_plan_model_backend_or_sdk() -> None:
    loaded = _modules_after("import orchestrator.cli")
    heavy = [name for name in loaded if name.startswith(("orchestrator.plan", "orchestrator.backends", "pydantic",
                                                         "azure", "papermill", "nbclient", "yaml"))]
    assert heavy == []


@pytest.mark.parametrize("module", ["orchestrator.azureml.commands", "orchestrator.trigger.commands",
                                    "orchestrator.cli.options"])
def test_each_command_module_imports_on_its_own(module: str) -> None:
    loaded = _modules_after(f"import {module}")
    assert module in loaded and not any(name.startswith("orchestrator.plan") for name in loaded)


def test_every_listed_command_loads_under_its_name() -> None:
    context = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert isinstance(command, click.Command) and command.name == name, name


def test_help_lists_every_command_by_its_own_first_sentence_without_importing_it() -> None:
    code = ("import sys, json, contextlib, io\nfrom orchestrator.cli.main import cli\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    cli.main(['--help'], standalone_mode=False)\n"
            "print(json.dumps([out.getvalue(), sorted(sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    text, loaded = json.loads(done.stdout)
    assert not [name for name in loaded if name.startswith(("orchestrator.plan", "orchestrator.azureml", "pydantic"))]
    context = click.Context(cli)
    for name, (_, sentence) in COMMANDS.items():
        command = cli.get_command(context, name)
        assert command is not None and " ".join((command.help or "").split()).startswith(sentence), name
        assert f"  {name}  " in text


def test_a_local_run_imports_no_azure_mlflow_devops_or_emulator_module() -> None:
    loaded = _modules_after("import orchestrator.cli.run, orchestrator.backends.local, orchestrator.report")
    assert not [name for name in loaded if name.startswith(("azure", "mlflow", "orchestrator.devops",
                                                            "orchestrator.azureml.emulator.workspace"))]


def test_the_progress_view_loads_no_report_writer() -> None:
    """It is on every run's critical path, before the first kernel; the report is built at the end."""
    loaded = _modules_after("import orchestrator.progress")
    assert not [name for name in loaded if name.startswith(("orchestrator.report", "jinja2"))]


def test_outside_the_cli_only_the_shared_options_are_imported_from_it() -> None:
    import ast
    from pathlib import Path

    import orchestrator

    package = Path(orchestrator.__file__).parent
    wrong = []
    for path in package.rglob("*.py"):
        if path.is_relative_to(package / "cli") or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orchestrator.cli"):
                if node.module != "orchestrator.cli.options" or any(a.name.startswith("_") for a in node.names):
                    wrong.append(f"{path.relative_to(package)}: from {node.module} import ...")
    assert wrong == []
