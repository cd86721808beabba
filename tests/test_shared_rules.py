"""The rules kept in one place each: ANSI stripping, atomic writes, the step result's reader, the retry rule
and the exit codes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from orchestrator.errors import EXIT_INTERRUPTED, EXIT_NOT_PASSED, EXIT_PASSED, exit_code_for
from steps.ansi import strip_ansi
from steps.atomic import write_json_atomic
from steps.step_result import RETRY_BACKOFF_S, StepError, StepResult, read_result_file, retry_delay_s


@pytest.mark.parametrize("coloured", [
    "\x1b[0;31mValueError\x1b[0m: bad",  # CSI colours (IPython tracebacks)
    "\x1b]0;title\x07ValueError: bad",  # OSC ended by BEL (terminal title)
    "\x1b]8;;http://x\x1b\\ValueError: bad",  # OSC ended by ST (hyperlink)
    "\x1bMValueError: bad",  # a two-character escape
])
def test_every_escape_form_is_stripped(coloured: str) -> None:
    assert strip_ansi(coloured) == "ValueError: bad"


def test_atomic_writes_leave_no_temporary_file_and_honour_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a" / "results.json", {"x": "é"})
    finally:
        os.umask(previous)
    path = tmp_path / "a" / "results.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {"x": "é"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and os.listdir(tmp_path / "a") == ["results.json"]


def test_the_reader_tolerates_partial_files_and_keeps_unknown_keys(tmp_path: Path) -> None:
    odd = {"step": "a", "status": "weird", "duration_s": float("inf"), "error": {"kind": "new_kind", "ename": 3},
           "warnings": "nope", "future_field": {"kept": True}}
    result = StepResult.from_json(odd)
    assert result.status == "error" and result.duration_s is None and result.notebook == "a"
    assert result.error == StepError(kind=None, ename="3") and result.error.type_name == "3"
    assert result.to_json()["future_field"] == {"kept": True}
    assert StepResult.from_json(result.to_json()) == result  # a round trip loses nothing
    assert StepResult.from_json("not an object", 4).step == "step-5"
    (tmp_path / "result.json").write_text("[1, 2]")
    assert read_result_file(tmp_path) is None and read_result_file(tmp_path / "missing") is None


def test_only_a_transient_error_is_retried_within_the_limit() -> None:
    transient = StepResult(step="a", notebook="a.ipynb", status="error", error=StepError(kind="infrastructure"))
    failed = StepResult(step="a", notebook="a.ipynb", status="failed", error=StepError(kind="cell_error"))
    assert retry_delay_s(transient, attempt=2, retries=2) == RETRY_BACKOFF_S * 2
    assert retry_delay_s(transient, attempt=3, retries=2) is None
    assert retry_delay_s(failed, attempt=1, retries=5) is None and retry_delay_s(None, 1, 5) is None


def test_run_statuses_map_to_exit_codes() -> None:
    assert [exit_code_for(s) for s in (None, "passed", "submitted", "failed", "interrupted")] == [
        EXIT_PASSED, EXIT_PASSED, EXIT_PASSED, EXIT_NOT_PASSED, EXIT_INTERRUPTED]


def test_a_refusal_is_part_of_the_error_root_and_crosses_processes() -> None:
    import pickle

    from orchestrator.errors import OrchestratorError
    from orchestrator.trigger.outcome import Refused

    refused = pickle.loads(pickle.dumps(Refused("no", ["a"], exit_code=3)))
    assert isinstance(refused, OrchestratorError)
    assert (refused.reason, refused.problems, refused.exit_code) == ("no", ("a",), 3)


def test_the_devops_package_exports_what_it_types() -> None:
    import orchestrator.devops as devops

    assert sorted(devops.__all__) == sorted(devops._EXPORTS)  # the TYPE_CHECKING imports name the same set
    assert all(callable(getattr(devops, name)) for name in devops.__all__)


def test_the_emulator_ignores_imports_for_the_type_checker_only() -> None:
    import ast

    from orchestrator.azureml.emulator.packages import _imports

    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rich\nelse:\n    import yaml\n")
    assert "rich" not in _imports(tree) and "yaml" in _imports(tree)


@pytest.mark.parametrize("status", ["running", "pending"])
def test_an_unfinished_step_reads_as_unfinished(status: str) -> None:
    result = StepResult.from_json({"step": "a", "status": status})
    assert result.status == status and not result.finished_normally and not result.not_passed


def test_the_distribution_name_is_declared_once_and_used_where_it_is_installed() -> None:
    import re

    from click.testing import CliRunner

    from orchestrator.cli import cli
    from orchestrator.errors import DISTRIBUTION

    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(rf'^name = "{DISTRIBUTION}"', pyproject, re.MULTILINE)
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert version is not None
    wheel = f"{DISTRIBUTION.replace('-', '_')}-{version.group(1)}-py3-none-any.whl"
    assert wheel in (root / "functionapp" / "requirements.txt").read_text(encoding="utf-8")
    shown = CliRunner().invoke(cli, ["--version"])
    assert shown.exit_code == 0 and version.group(1) in shown.output
